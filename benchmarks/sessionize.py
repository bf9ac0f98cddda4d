"""Benchmark the sessionize job on generated clickstreams of growing size.

    python benchmarks/sessionize.py --events 1000000 5000000 10000000

Generation is not timed. Each size runs the real job (jobs/sessionize.py) in a fresh process with
local[2]; wall time, events/s and the peak resident memory of the whole process tree (Python
driver + JVM) are printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from common import ROOT, du, machine, run_measured, table

DATE = "2026-11-26"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 5_000_000, 10_000_000])
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--driver-memory", default="6g")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="interest-bench-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"machine: {machine()}", flush=True)
    for n in args.events:
        root = work / f"e{n}"
        sets = [
            "--set",
            f"paths.root={root}",
            "--set",
            f"spark.conf={{spark.driver.memory: '{args.driver_memory}', spark.ui.enabled: 'false', "
            "spark.sql.shuffle.partitions: '16'}",
        ]
        gen_wall, _, code = run_measured(
            [sys.executable, "jobs/generate.py", "--events", str(n), *sets], env, root.with_suffix(".gen.log")
        )
        if code:
            sys.exit(f"generation failed for {n} (see {root}.gen.log)")
        wall, peak, code = run_measured(
            [sys.executable, "jobs/sessionize.py", "--date", DATE, *sets], env, root.with_suffix(".log")
        )
        if code:
            sys.exit(f"sessionize failed for {n} (see {root}.log)")
        summary = json.loads((root / "reports" / "sessionize" / f"dt={DATE}" / "summary.json").read_text())
        rows.append(
            [
                f"{summary['rows_in']:,}",
                f"{du(root / 'raw'):,}",
                f"{summary['users']:,}",
                f"{wall:.1f}",
                f"{summary['rows_in'] / wall:,.0f}",
                f"{peak / 2**30:.2f}",
                f"{summary['wall_s']:.1f}",
                f"{gen_wall:.1f}",
            ]
        )
        print(
            table(
                ["events in", "raw bytes", "users", "wall s", "events/s", "peak RSS GiB", "stage s", "generate s"],
                rows[-1:],
            ),
            flush=True,
        )
    print(f"\nmachine: {machine()}; local[2], driver memory {args.driver_memory}\n")
    print(
        table(
            [
                "events in",
                "raw bytes",
                "users",
                "wall s (job)",
                "events/s",
                "peak RSS GiB",
                "stage s (in job)",
                "generate s",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
