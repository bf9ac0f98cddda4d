"""Probe a faster sessionize: the validation and the sort done in Arrow inside the Python pass.

    python benchmarks/sessionize.py --events 10000000 --work data/bench   # makes the files
    python benchmarks/sessionize_probe.py --root data/bench/e10000000

Times, with Spark's ``noop`` sink (nothing written), two ways of bringing the window's raw rows
to Python sorted by user and time, each twice, alternating:

- today's: validation in Spark (``sessionize.classify``), the shuffle by user, Spark's sort by
  (user, ts, ingest_order, event_rank), and the rows through ``mapInArrow`` unchanged;
- the probe's: the raw text shuffled by a 64-bit hash of the user and sorted by that hash alone
  (Spark's radix sort of one long), then per batch of whole users in Arrow: ids trimmed, event
  types lower-cased and ranked, ISO times matched and cast, and the sort by (user, ts, arrival,
  funnel stage).

The probe covers only what the benchmark's files hold (ISO times ending in 'Z'); it writes no
reject reasons and no steps, so it bounds what the change could save: it is not the stage.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine  # noqa: E402

sys.path.insert(0, str(ROOT))
from interest.etl.validate import ISO_UTC  # noqa: E402  (the job's shape of an ISO time in UTC)

PROBE_SCHEMA = "user_id string, ts long, item_id string, event_rank int, category string, blk long, row long"


def validate_and_sort(table: pa.Table, event_types: pa.Array) -> pa.Table:
    """Whole users' raw rows -> typed and sorted by (user, ts, arrival, funnel stage)."""
    text = pc.utf8_trim(table.column("ts_raw"), " ")
    iso = pc.fill_null(pc.match_substring_regex(text, ISO_UTC), False)
    ts = np.full(table.num_rows, np.iinfo(np.int64).min)  # [n] micros; unparseable: the smallest
    ts[np.flatnonzero(np.asarray(iso))] = np.asarray(
        pc.cast(pc.replace_substring(pc.filter(text, iso), "Z", ""), pa.timestamp("us")).cast(pa.int64())
    )
    out = pa.table(
        {
            "user_id": pc.utf8_trim(table.column("user_id"), " "),
            "ts": pa.array(ts),
            "item_id": pc.utf8_trim(table.column("item_id"), " "),
            "event_rank": pc.index_in(pc.utf8_lower(pc.utf8_trim(table.column("event_type"), " ")), event_types),
            "category": table.column("category"),
            "blk": table.column("blk"),
            "row": table.column("row"),
        }
    )
    keys = ["user_id", "ts", "blk", "row", "event_rank"]
    return out.take(pc.sort_indices(out, [(k, "ascending") for k in keys]))


def by_hash(batches: Iterable[pa.RecordBatch], event_types: pa.Array) -> Iterable[pa.RecordBatch]:
    """:func:`validate_and_sort` on batches sorted by the user's hash, each call on whole hashes."""
    carried: list[pa.RecordBatch] = []
    for batch in batches:
        if not batch.num_rows:
            continue
        h = np.asarray(batch.column("h"))
        cut = int(np.searchsorted(h, h[-1]))  # the last hash may go on in the next batch
        if cut:
            whole = pa.Table.from_batches([*carried, batch.slice(0, cut)])
            yield from validate_and_sort(whole, event_types).to_batches()
            carried = []
        carried.append(batch.slice(cut))
    if carried:
        yield from validate_and_sort(pa.Table.from_batches(carried), event_types).to_batches()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="paths.root of generated files (benchmarks/sessionize.py)")
    parser.add_argument("--date", default="2026-11-26")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from pyspark.sql import functions as F

    from interest.config import load_config
    from interest.etl import sessionize, sessions
    from interest.etl.lookback import read_window
    from interest.layout import Layout
    from interest.spark import get_spark

    conf = "{spark.driver.memory: '6g', spark.ui.enabled: 'false', spark.sql.shuffle.partitions: '16'}"
    cfg = load_config(None, [f"paths.root={args.root}", f"spark.conf={conf}"])
    spark = get_spark(cfg, app_name="interest-sessionize-probe")
    raw = read_window(spark, cfg, Layout.of(cfg, args.date))
    types = pa.array(cfg.sessionize.event_types)
    arrival = [F.col("ingest_order.block").alias("blk"), F.col("ingest_order.row").alias("row")]
    probe = (
        raw.rows.select("user_id", "item_id", "event_type", "ts_raw", "category", *arrival)
        .withColumn("h", F.xxhash64(F.trim("user_id")))
        .repartition(16, "h")
        .sortWithinPartitions("h")
        .mapInArrow(lambda batches: by_hash(batches, types), PROBE_SCHEMA)
    )
    flagged = sessionize.classify(raw.rows, cfg, args.date, raw.partitioned).drop("outside")
    ordered = sessions._sorted_by_user(sessions.with_event_rank(flagged, cfg.sessionize.event_types)).select(
        "user_id", "ts", "item_id", "event_rank", "category", "event_type", "ts_raw", "dt", "reject_reason"
    )
    today = ordered.mapInArrow(lambda batches: batches, ordered.schema)
    print(f"machine: {machine()}; local[2], {raw.file_rows:,} rows", flush=True)
    print("| repeat | today s | probe s |\n|---|---|---|", flush=True)
    for repeat in range(args.repeats):
        seconds = []
        for frame in (today, probe):
            started = time.perf_counter()
            frame.write.format("noop").mode("overwrite").save()
            seconds.append(time.perf_counter() - started)
        print(f"| {repeat + 1} | {seconds[0]:.1f} | {seconds[1]:.1f} |", flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
