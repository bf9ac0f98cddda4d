"""The stage's column pass (``validate_arrow``, ``sessions.clean_raw_steps``) against Spark's
reading of the same rows: every output row equal, on messy random logs."""

from __future__ import annotations

import datetime as dt
import random

import pyarrow as pa
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from interest.etl import ingest, sessionize, validate_arrow

from conftest import DATE, make_config

USERS = ["u1", " u1", "u2 ", "u3", "U3", "u4", "u5", "", "  ", None]
ITEMS = ["a", " a", "b", "c ", "d", "", None]
TYPES = ["view", " View", "CLICK ", "cart", "purchase", "like", "", None, "VİEW", "Ärger"]
CATEGORIES = ["x", " y", "z ", "", None]
BAD_TIMES = ["", "  ", None, "not a time", "2026-02-30T05:40:23Z", "1e400", "0x1p30", "-5", "2026-11-13T25:00:00Z"]


def _time(rng: random.Random, at: dt.datetime) -> str:
    """One instant as a log might write it (some before the window, some after the run's end)."""
    secs = (at - dt.datetime(1970, 1, 1)).total_seconds()
    return rng.choice(
        [
            f"{secs:.0f}",
            f"{secs:.3f}",
            f"{secs * 1000:.0f}",
            at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            at.strftime("%Y-%m-%d %H:%M:%S"),
            (at + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00"),
            f" {at:%Y-%m-%dT%H:%M:%SZ} ",
        ]
    )


def _raw(spark, seed: int):
    """Canonical raw rows from three files, with copies, ties in time across files, bad rows."""
    rng = random.Random(seed)
    end = dt.datetime.fromisoformat(DATE) + dt.timedelta(hours=20)
    rows = []
    for n in range(700):
        at = end - dt.timedelta(seconds=rng.choice([0, 1, 60, 1800, 5000, 86_400 * 3, 86_400 * 20, -86_400]))
        ts = rng.choice(BAD_TIMES) if rng.random() < 0.08 else _time(rng, at)
        corrupt = "{broken" if rng.random() < 0.02 else None
        file = f"file:/logs/dt=2026-11-2{rng.randint(0, 6)}/part-{rng.randint(0, 2)}.parquet"
        row = (rng.choice(USERS), rng.choice(ITEMS), rng.choice(TYPES), ts, rng.choice(CATEGORIES), DATE, corrupt)
        for copy in range(rng.choice([1, 1, 1, 2, 3])):
            rows.append((*row, (file, rng.choice([0, 0, 4096]), n * 4 + copy)))
    # one row for each rule at least, whatever the draw
    for n, (ts, corrupt, kind) in enumerate([("-5", None, "view"), ("1", "{broken", "view"), ("2", None, "like")]):
        rows.append(("u9", "a", kind, ts, "x", DATE, corrupt, ("file:/logs/extra.parquet", 0, n)))
    schema = ", ".join(
        f"{c} {'struct<file:string,block:bigint,row:bigint>' if c == ingest.INGEST_ORDER else 'string'}"
        for c in ingest.CANONICAL
    )
    return spark.createDataFrame(rows, schema), len(rows)


@pytest.mark.parametrize(
    ("partitioned", "policy", "ts_format"),
    [(True, "exclude", "auto"), (False, "cap", "auto"), (True, "cap", "epoch_s")],
)
def test_the_column_pass_gives_every_row_spark_gives(spark, tmp_path, partitioned, policy, ts_format):
    """``sessionize.clean`` by column and in Spark: the same steps, bot rejects, validation
    rejects (with the values as normalized) and rows outside the window, row for row, with
    users cut across Arrow batches of 7 rows. Under epoch_s every ISO text is unparseable and
    epoch milliseconds lie far in the future, both ways alike."""
    cfg = make_config(
        tmp_path,
        "sessionize.lookback_days=7",
        f"sessionize.bot_max_events_per_day={12 if ts_format == 'auto' else 3}",  # fewer valid rows under epoch_s
        f"sessionize.bot_policy={policy}",
        f"ingest.ts_format={ts_format}",
    )
    raw, n = _raw(spark, seed=3 if partitioned else 4)
    before = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "7")
    kept = []
    try:
        by_column, in_spark = (
            sessionize.clean(raw, cfg, DATE, partitioned, by_column=way).cache() for way in (True, False)
        )
        kept += [by_column, in_spark]
        assert_df_equality(by_column, in_spark, ignore_row_order=True, ignore_nullable=True)
        reasons = {r[0] for r in by_column.select("reject_reason").distinct().collect()}
        # the log reaches every rule, the bots and, when not partitioned, the window's start
        assert {None, "null_user_id", "null_item_id", "null_ts", "unparseable_ts"} <= reasons
        assert {"malformed_line", "unknown_event_type", "negative_ts", "future_ts"} <= reasons
        assert ("bot_user" if policy == "exclude" else "bot_cap") in reasons
        assert (sessionize.OUTSIDE in reasons) == (not partitioned)
        assert by_column.agg(F.sum("copies")).collect()[0][0] == n  # every raw row behind one output row
        assert by_column.where(F.col("n_events") > 1).count() > 0  # repeats merged into steps
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", before or "10000")
        for frame in kept:
            frame.unpersist()


def test_the_column_pass_is_taken_where_the_rows_grammar_reads_the_format():
    assert validate_arrow.applies("auto", "UTC")
    assert validate_arrow.applies("epoch_ms", "Etc/UTC")
    assert not validate_arrow.applies("auto", "Europe/Berlin")  # a naive time is then Berlin's
    assert not validate_arrow.applies("yyyy-MM-dd HH:mm:ss", "UTC")  # a Spark pattern: Spark reads it


@pytest.mark.parametrize("files", [["f2", "f1", "f2", "f1", "f1", "f1"], [None] * 6])
def test_users_sharing_a_hash_are_sorted_apart(files):
    """Two users under one 64-bit hash (rare, but possible) still come out each in one run, in
    time order, ties by arrival (file, then row; rows not read from a file have none), rejected
    rows after them."""
    checks = validate_arrow.Checks(("view",), "auto", dt.datetime(2027, 1, 1), None, "outside_window")
    raw = pa.table(
        {
            "user_id": ["a", "b", "a", "b", "a", None],
            "item_id": ["i1", "i2", "i3", "i4", "i5", "i6"],
            "event_type": ["view"] * 6,
            "ts_raw": ["30", "10", "10", "20", "10", "5"],
            "category": pa.nulls(6, pa.string()),
            "dt": [DATE] * 6,
            "_corrupt_record": pa.nulls(6, pa.string()),
            "file": pa.array(files, pa.string()),
            "block": [0] * 6,
            "row": [0, 1, 2, 3, 4, 5],
            "h": [7] * 6,
        }
    )
    got = validate_arrow.arrival_sorted(validate_arrow.judge(raw, checks), raw)
    assert got.column("user_id").to_pylist() == ["a", "a", "a", "b", "b", None]
    tie = ["i5", "i3"] if files[0] else ["i3", "i5"]  # a's two events at 10: file f1 first, else row 2 first
    assert got.column("item_id").to_pylist() == [*tie, "i1", "i2", "i4", "i6"]
    assert got.column("reject_reason").to_pylist() == [None] * 5 + ["null_user_id"]


def test_ts_micros_reads_the_fast_shape_and_numbers():
    """A few exact readings (the whole grammar is compared with Spark's in test_validate)."""
    texts = ["2026-11-13T05:40:23.1234567Z", "1731480023", "1731480023000", "1731480023.5", "2026-11-13T05:40"]
    micros, parsed = validate_arrow.ts_micros(pa.array(texts), "auto")
    base = 1794548423  # 2026-11-13T05:40:23Z
    assert parsed.all()
    assert micros.tolist() == [
        base * 1_000_000 + 123456,
        1731480023 * 1_000_000,
        1731480023 * 1_000_000,
        1731480023 * 1_000_000 + 500_000,
        (base - 23) * 1_000_000,
    ]
