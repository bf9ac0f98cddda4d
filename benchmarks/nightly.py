"""Benchmark the nightly refresh and the embedding throughput on generated events, and how its
cost grows with the events.

    python benchmarks/nightly.py --events 1000000 [--storage local hdfs] [--table-format delta parquet]
    python benchmarks/nightly.py --events 1000000 10000000 50000000 --epochs 1 --work DIR [--reuse]

Generates the clickstream (not timed), then runs ``jobs/nightly.py`` for the last day as a fresh
process (JVM start included): sessionize, train (config epochs), embed, gates, publish. Prints the
stage timings from the run report and the embedding throughput (users embedded and published
per second of the embed stage), with the peak memory of the process tree. With ``--storage hdfs``
the same run has ``paths.root`` on a real HDFS (Hadoop's MiniDFSCluster on 127.0.0.1, as in the
tests), the raw events uploaded to it first (not timed). Each table format runs in a root of its
own on the same generated events; "publish s" is the staging, gates and commit of the three
tables, "retention s" the retention pass (Delta: DELETE + VACUUM when a date is dropped).

With several ``--events`` sizes, a growth table follows: each stage's seconds and peak memory (the
process tree's samples within the stage, the stages placed by the run log's first line and the
report's timings) and, at each step up in size, the growth exponent log(t2/t1) / log(n2/n1):
1 is linear, below 1 the stage's fixed cost still shows. ``--reuse`` keeps the events generated
under ``--work`` by an earlier run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, run_measured, table

DATE = "2026-11-26"
STAGES = ("start-up", "sessionize", "train", "embed_publish", "quality")
FIRST_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) .*  sessionize")  # the refresh's first stage


def stage_windows(log: Path, started: float, timings: dict[str, float]) -> dict[str, tuple[float, float]]:
    """(start, end) in time.time() of each stage: start-up from the launch to the first stage's
    log line, then the report's timings back to back."""
    for line in log.read_text(errors="replace").splitlines():
        if m := FIRST_LINE.match(line):
            at = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
            break
    else:
        raise SystemExit(f"no sessionize line in {log}")
    windows = {"start-up": (started, at)}
    for stage in STAGES[1:]:
        windows[stage] = (at, at + timings[stage])
        at += timings[stage]
    return windows


def stage_peaks(series: list[tuple[float, int]], windows: dict[str, tuple[float, float]]) -> dict[str, float]:
    """GiB: the largest sample within each stage's window (one sampling period of slack)."""
    return {
        stage: max((b for t, b in series if lo - 0.5 <= t <= hi + 0.5), default=0) / 2**30
        for stage, (lo, hi) in windows.items()
    }


def growth_table(runs: list[dict]) -> str:
    """Seconds and peak GiB per stage at each size, and the exponent at each step up."""
    rows = []
    for stage in (*STAGES, "nightly"):
        row: list[object] = [stage.replace("_", "+")]
        for i, run in enumerate(runs):
            row += [f"{run['seconds'][stage]:.1f}", f"{run['peaks'][stage]:.2f}"]
            if i:
                prev = runs[i - 1]
                ratio = math.log(run["seconds"][stage] / prev["seconds"][stage])
                row.append(f"{ratio / math.log(run['events'] / prev['events']):.2f}")
        rows.append(row)
    header = ["stage"]
    for i, run in enumerate(runs):
        size = f"{run['events'] / 1e6:.0f}M"
        header += [f"{size} s", f"{size} peak GiB"] + ([f"exponent to {size}"] if i else [])
    return table(header, rows)


def night(work: Path, where: str, fmt: str, common: list[str], env: dict[str, str]) -> tuple[list[object], dict]:
    """One nightly run as a fresh process: its table row and its per-stage seconds and peaks."""
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
        log, series, started = work / f"nightly-{where}-{fmt}.log", [], time.time()
        wall, peak, code = run_measured(
            [sys.executable, "jobs/nightly.py", "--date", DATE, "--show", "0", *sets], env, log, series
        )
        if code:
            sys.exit(f"nightly failed: see {log}")
        from interest import storage

        report = json.loads(storage.read_text(f"{root}/reports/nightly/dt={DATE}/report.json"))
    t, e, s = report["timings_s"], report["embed"], report["sessionize"]
    windows = stage_windows(log, started, t)
    seconds = {stage: hi - lo for stage, (lo, hi) in windows.items()} | {"nightly": wall}
    peaks = stage_peaks(series, windows) | {"nightly": peak / 2**30}
    row = [
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
    return row, {"events": s["rows_in"], "seconds": seconds, "peaks": peaks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--storage", nargs="+", default=["local"], choices=["local", "hdfs"])
    parser.add_argument("--table-format", nargs="+", default=["delta"], choices=["delta", "parquet"])
    parser.add_argument("--work", default=None)
    parser.add_argument("--reuse", action="store_true", help="keep events generated under --work before")
    args = parser.parse_args()
    top = Path(args.work or tempfile.mkdtemp(prefix="interest-nightly-bench-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    spark_conf = "spark.conf={spark.ui.enabled: 'false', spark.sql.shuffle.partitions: '16', spark.driver.memory: '6g'}"
    common = ["--set", f"train.epochs={args.epochs}", "--set", spark_conf]
    rows, growth = [], []
    for events in args.events:
        work = top / f"events_{events}" if len(args.events) > 1 else top
        work.mkdir(parents=True, exist_ok=True)
        marker = work / "generated.txt"
        if not (args.reuse and marker.exists()):
            local = ["--set", f"paths.root={work}", *common]
            _, _, code = run_measured(
                [sys.executable, "jobs/generate.py", "--events", str(events), *local], env, work / "generate.log"
            )
            if code:
                sys.exit(f"generation failed: see {work / 'generate.log'}")
            marker.write_text(f"{events}\n")
        for where, fmt in [(w, f) for w in args.storage for f in args.table_format]:
            row, run = night(work, where, fmt, common, env)
            rows.append(row)
            growth.append(run)
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
    if len(growth) > 1 and len(args.storage) == 1 and len(args.table_format) == 1:
        print(f"\nHow each stage grows ({args.storage[0]} paths, {args.table_format[0]} tables):\n")
        print(growth_table(growth))


if __name__ == "__main__":
    main()
