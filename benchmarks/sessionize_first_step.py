"""Time the sessionize stage's first step both ways: rows judged and sorted by column in the
Python pass (the default), or by Spark.

    python benchmarks/sessionize.py --events 10000000 --work data/bench   # makes the files
    python benchmarks/sessionize_first_step.py --root data/bench/e10000000

The first step (``sessionize.clean``: read, validate, deduplicate, bots, steps) on the window's
raw files, written to Spark's ``noop`` sink (nothing kept), each way in turn in one Spark session,
``--repeats`` times: the first repeat runs with a cold JVM. ``by column`` is what the job runs
where ``ingest.ts_format`` is auto or epoch and the session is in UTC; ``in Spark`` is
``etl.validate`` and Spark's sort by (user, time, arrival, funnel stage), which the job keeps for
a Spark pattern. Both give the same rows (tests/etl/test_validate_arrow.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine  # noqa: E402

sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="paths.root of generated files (benchmarks/sessionize.py)")
    parser.add_argument("--date", default="2026-11-26")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from interest.config import load_config
    from interest.etl import sessionize
    from interest.etl.lookback import read_window
    from interest.layout import Layout
    from interest.spark import get_spark

    conf = "{spark.driver.memory: '6g', spark.ui.enabled: 'false', spark.sql.shuffle.partitions: '16'}"
    cfg = load_config(None, [f"paths.root={args.root}", f"spark.conf={conf}"])
    spark = get_spark(cfg, app_name="interest-sessionize-first-step")
    raw = read_window(spark, cfg, Layout.of(cfg, args.date))
    ways = {
        "in Spark": sessionize.clean(raw.rows, cfg, args.date, raw.partitioned, by_column=False),
        "by column": sessionize.clean(raw.rows, cfg, args.date, raw.partitioned, by_column=True),
    }
    print(f"machine: {machine()}; local[2], {raw.file_rows:,} rows", flush=True)
    print(f"| repeat | {' s | '.join(ways)} s |\n|---|{'---|' * len(ways)}", flush=True)
    for repeat in range(args.repeats):
        seconds = []
        for frame in ways.values():
            started = time.perf_counter()
            frame.write.format("noop").mode("overwrite").save()
            seconds.append(time.perf_counter() - started)
        print(f"| {repeat + 1} | {' | '.join(f'{s:.1f}' for s in seconds)} |", flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
