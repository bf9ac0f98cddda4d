"""Benchmark the sessionize job on generated clickstreams of growing size, against DuckDB.

    pip install -e '.[benchmark]'
    python benchmarks/sessionize.py --events 1000000 5000000 10000000
    python benchmarks/sessionize.py --events 10000000 --repeats 2   # two runs on the same files

Generation is not timed. Each size runs the real job (jobs/sessionize.py) in a fresh process with
local[2]; wall time, events/s and the peak resident memory of the whole process tree (Python
driver + JVM) are printed as a Markdown table. Then the same work as one DuckDB SQL script
(benchmarks/duckdb_sessionize.py, 2 threads) runs on the same raw files in a fresh process: its
time, the ratio, and whether the two agree on users, events kept and merged steps.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from duckdb_sessionize import compare

from common import ROOT, du, machine, run_measured, table

DATE = "2026-11-26"
HEADERS = [
    "events in",
    "raw bytes",
    "users",
    "wall s (job)",
    "events/s",
    "peak RSS GiB",
    "stage s (in job)",
    "DuckDB s",
    "job / DuckDB",
    "DuckDB RSS GiB",
    "same counts",
    "rows equal (job/DuckDB)",
    "generate s",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 5_000_000, 10_000_000])
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--no-duckdb", action="store_true", help="skip the DuckDB yardstick")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of the job and the yardstick, one after the other, on the same files (a machine's "
        "speed can move by a fifth between runs: the ratio is read within each)",
    )
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
        for _ in range(args.repeats):
            rows.append([*_one_run(root, sets, env, not args.no_duckdb), f"{gen_wall:.1f}"])
            print(table(HEADERS, rows[-1:]), flush=True)
    print(f"\nmachine: {machine()}; local[2], driver memory {args.driver_memory}\n")
    print(table(HEADERS, rows))


def _one_run(root: Path, sets: list[str], env: dict[str, str], duckdb: bool) -> list[str]:
    """The job, then the yardstick, on the files under ``root``: a table row (without generation)."""
    wall, peak, code = run_measured(
        [sys.executable, "jobs/sessionize.py", "--date", DATE, *sets], env, root.with_suffix(".log")
    )
    if code:
        sys.exit(f"sessionize failed for {root.name} (see {root}.log)")
    summary = json.loads((root / "reports" / "sessionize" / f"dt={DATE}" / "summary.json").read_text())
    duck = ["–", "–", "–", "–", "–"]
    if duckdb:
        log = root.with_suffix(".duckdb.log")
        shutil.rmtree(root / "duckdb", ignore_errors=True)  # DuckDB will not write into a full folder
        d_wall, d_peak, code = run_measured(
            [
                sys.executable,
                "benchmarks/duckdb_sessionize.py",
                *("--raw", str(root / "raw" / "events"), "--out", str(root / "duckdb"), "--date", DATE),
            ],
            env,
            log,
        )
        if code:
            sys.exit(f"the DuckDB script failed for {root.name} (see {log})")
        got = json.loads(log.read_text().strip().splitlines()[-1])
        same = (got["users"], got["events_kept"], got["steps"]) == (
            summary["users"],
            summary["events_kept"],
            summary["steps"],
        )
        equal = compare(summary["outputs"], root / "duckdb")
        all_equal = all(len(set(counts)) == 1 for counts in equal.values())
        duck = [
            f"{d_wall:.1f}",
            f"{wall / d_wall:.1f}x",
            f"{d_peak / 2**30:.2f}",
            "yes" if same else f"NO: {got}",
            f"all of {sum(counts[0] for counts in equal.values()):,}" if all_equal else f"NO: {equal}",
        ]
    steps = summary.get("step_seconds", {})
    slowest = sorted(steps.items(), key=lambda kv: -kv[1])
    print(f"job by step, slowest first (s): {', '.join(f'{k} {v:.1f}' for k, v in slowest)}", flush=True)
    return [
        f"{summary['rows_in']:,}",
        f"{du(root / 'raw'):,}",
        f"{summary['users']:,}",
        f"{wall:.1f}",
        f"{summary['rows_in'] / wall:,.0f}",
        f"{peak / 2**30:.2f}",
        f"{summary['wall_s']:.1f}",
        *duck,
    ]


if __name__ == "__main__":
    main()
