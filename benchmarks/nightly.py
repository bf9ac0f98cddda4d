"""Benchmark the nightly refresh and the embedding throughput on generated events.

    python benchmarks/nightly.py --events 1000000

Generates the clickstream (not timed), then runs ``jobs/nightly.py`` for the last day as a fresh
process (JVM start included): sessionize, train (config epochs), embed, gates, publish. Prints the
stage timings from the run report and the embedding throughput (users embedded and published
per second of the embed stage), with the peak memory of the process tree.
"""
from __future__ import annotations

import argparse
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
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="interest-nightly-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sets = ["--set", f"paths.root={work}", "--set", f"train.epochs={args.epochs}", "--set",
            "spark.conf={spark.ui.enabled: 'false', spark.sql.shuffle.partitions: '16', spark.driver.memory: '6g'}"]
    _, _, code = run_measured([sys.executable, "jobs/generate.py", "--events", str(args.events), *sets],
                              env, work / "generate.log")
    if code:
        sys.exit(f"generation failed: see {work / 'generate.log'}")
    wall, peak, code = run_measured([sys.executable, "jobs/nightly.py", "--date", DATE, "--show", "0", *sets],
                                    env, work / "nightly.log")
    if code:
        sys.exit(f"nightly failed: see {work / 'nightly.log'}")
    report = json.loads((work / "reports" / "nightly" / f"dt={DATE}" / "report.json").read_text())
    t, e, s = report["timings_s"], report["embed"], report["sessionize"]
    print(f"machine: {machine()}; local[2], driver memory 6g, {args.epochs} training epochs\n")
    print(table(["events in", "users", "sessionize s", "train s", "embed+publish s", "nightly wall s",
                 "inference s", "embed users/s", "peak RSS GiB"],
                [[f"{s['rows_in']:,}", f"{e['rows']:,}", t["sessionize"], t["train"], t["embed_publish"],
                  f"{wall:.0f}", e["inference_seconds"], f"{e['users_per_second']:,.0f}", f"{peak / 2**30:.2f}"]]))


if __name__ == "__main__":
    main()
