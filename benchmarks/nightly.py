"""Benchmark the nightly refresh and the embedding throughput on generated events.

    python benchmarks/nightly.py --events 1000000 [--storage local hdfs] [--table-format delta parquet]

Generates the clickstream (not timed), then runs ``jobs/nightly.py`` for the last day as a fresh
process (JVM start included): sessionize, train (config epochs), embed, gates, publish. Prints the
stage timings from the run report and the embedding throughput (users embedded and published
per second of the embed stage), with the peak memory of the process tree. With ``--storage hdfs``
the same run has ``paths.root`` on a real HDFS (Hadoop's MiniDFSCluster on 127.0.0.1, as in the
tests), the raw events uploaded to it first (not timed). Each table format runs in a root of its
own on the same generated events; "publish s" is the staging, gates and commit of the three
tables, "retention s" the retention pass (Delta: DELETE + VACUUM when a date is dropped).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

from common import ROOT, machine, run_measured, table

DATE = "2026-11-26"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--storage", nargs="+", default=["local"], choices=["local", "hdfs"])
    parser.add_argument("--table-format", nargs="+", default=["delta"], choices=["delta", "parquet"])
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="interest-nightly-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    spark_conf = "spark.conf={spark.ui.enabled: 'false', spark.sql.shuffle.partitions: '16', spark.driver.memory: '6g'}"
    common = ["--set", f"train.epochs={args.epochs}", "--set", spark_conf]
    local = ["--set", f"paths.root={work}", *common]
    _, _, code = run_measured(
        [sys.executable, "jobs/generate.py", "--events", str(args.events), *local], env, work / "generate.log"
    )
    if code:
        sys.exit(f"generation failed: see {work / 'generate.log'}")
    rows = []
    for where, fmt in [(w, f) for w in args.storage for f in args.table_format]:
        with contextlib.ExitStack() as stack:
            if where == "hdfs":
                sys.path.insert(0, str(ROOT / "tests"))
                from interest import storage

                from minihdfs import MiniHdfs

                (work / "hdfs").mkdir(exist_ok=True)
                hdfs = stack.enter_context(MiniHdfs(work / "hdfs"))
                storage.configure(hdfs.http_port)
                root = f"{hdfs.url}/interest-{fmt}"
                storage.upload(str(work / "raw" / "events"), f"{root}/raw/events")
                sets = ["--set", f"paths.root={root}", "--set", f"storage.webhdfs_port={hdfs.http_port}", *common]
            else:
                root = str(work / f"root-{fmt}")
                sets = ["--set", f"paths.root={root}", "--set", f"ingest.path={work}/raw/events", *common]
            sets += ["--set", f"embed.table_format={fmt}"]
            wall, peak, code = run_measured(
                [sys.executable, "jobs/nightly.py", "--date", DATE, "--show", "0", *sets],
                env,
                work / f"nightly-{where}-{fmt}.log",
            )
            if code:
                sys.exit(f"nightly failed: see {work / f'nightly-{where}-{fmt}.log'}")
            from interest import storage

            report = json.loads(storage.read_text(f"{root}/reports/nightly/dt={DATE}/report.json"))
        t, e, s = report["timings_s"], report["embed"], report["sessionize"]
        rows.append(
            [
                where,
                fmt,
                f"{s['rows_in']:,}",
                f"{e['rows']:,}",
                t["sessionize"],
                t["train"],
                t["embed_publish"],
                e["publish_seconds"],
                e["retention_seconds"],
                f"{wall:.0f}",
                e["inference_seconds"],
                f"{e['users_per_second']:,.0f}",
                f"{peak / 2**30:.2f}",
            ]
        )
    print(f"machine: {machine()}; local[2], driver memory 6g, {args.epochs} training epochs\n")
    print(
        table(
            [
                "paths.root",
                "tables",
                "events in",
                "users",
                "sessionize s",
                "train s",
                "embed+publish s",
                "publish s",
                "retention s",
                "nightly wall s",
                "inference s",
                "embed users/s",
                "peak RSS GiB",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
