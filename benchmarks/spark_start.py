"""How long a local job's Spark takes to start, with and without the class archive.

    python benchmarks/spark_start.py --repeat 5

Each run is a fresh process: ``get_spark`` on the local default, one small job (a shuffle and an
aggregate), ``stop``. Runs alternate between the class archive (``interest/java.py``,
built first if missing) and none (``INTEREST_JVM_CACHE=off``); the table gives the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from common import ROOT, machine, table

PROBE = """
import json, time
t0 = time.perf_counter()
from interest.config import load_config
from interest.spark import get_spark
spark = get_spark(load_config(None, ["embed.table_format=parquet"]))
t1 = time.perf_counter()
spark.range(20000).selectExpr("id % 97 as k").groupBy("k").count().collect()
t2 = time.perf_counter()
spark.stop()
print(json.dumps({"session": t1 - t0, "first_job": t2 - t1}))
"""


def run(archive: bool) -> dict[str, float]:
    env = dict(os.environ)
    if not archive:
        env["INTEREST_JVM_CACHE"] = "off"
    tic = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    return {**got, "process": time.perf_counter() - tic}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "interest.java"], cwd=ROOT, check=True)
    runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for _ in range(args.repeat):
        for archive in (False, True):
            runs[archive].append(run(archive))
    rows = [
        [
            "class archive" if archive else "none",
            *[f"{statistics.median(r[k] for r in runs[archive]):.2f}" for k in ("session", "first_job", "process")],
        ]
        for archive in (False, True)
    ]
    print(f"\nmachine: {machine()}; median of {args.repeat} fresh processes each, alternating\n")
    print(table(["JVM", "get_spark s", "first job s", "whole process s"], rows))


if __name__ == "__main__":
    main()
