"""Validation: each rejection reason on inline rows, with exact expected frames (chispa)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pyarrow as pa
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from interest.config import IngestConfig
from interest.etl import ingest, validate, validate_arrow

EVENT_TYPES = ["view", "click", "cart", "purchase"]
LATEST = dt.datetime(2026, 11, 27, 1, 0, 0)  # run date 2026-11-26 + 60 min skew


def canonical(spark, rows):
    cols = ["user_id", "item_id", "event_type", "ts_raw", "category", "dt", "_corrupt_record"]
    return spark.createDataFrame(rows, ",".join(f"{c} string" for c in cols)).withColumn(
        ingest.INGEST_ORDER, ingest.no_ingest_order()
    )


def reasons(spark, rows, ts_format="auto"):
    df = validate.with_reject_reason(validate.normalize(canonical(spark, rows), ts_format), EVENT_TYPES, LATEST)
    return df.select("user_id", "item_id", "reject_reason")


def test_each_reason_is_assigned(spark):
    ok = "2026-11-26T10:00:00.000Z"
    rows = [
        ("u1", "i1", "view", ok, "c1", "2026-11-26", None),
        ("u2", "i2", None, None, None, None, '{"user_id": "u2", "ite'),  # torn line
        (None, "i3", "view", ok, "c1", "2026-11-26", None),
        ("  ", "i4", "view", ok, "c1", "2026-11-26", None),  # blank id counts as null
        ("u5", None, "view", ok, "c1", "2026-11-26", None),
        ("u6", "i6", "view", None, "c1", "2026-11-26", None),
        ("u7", "i7", "view", "yesterday-ish", "c1", "2026-11-26", None),
        ("u8", "i8", "view", "1969-12-31T23:59:00Z", "c1", "2026-11-26", None),
        ("u9", "i9", "view", "2026-11-27T01:00:01Z", "c1", "2026-11-26", None),
        ("u10", "i10", "hover", ok, "c1", "2026-11-26", None),
        ("u11", "i11", None, ok, "c1", "2026-11-26", None),
        ("u12", "i12", " CLICK ", "2026-11-27T01:00:00Z", "c1", "2026-11-26", None),  # at the limit
    ]
    expected = spark.createDataFrame(
        [
            ("u1", "i1", None),
            (None, None, "malformed_line"),
            (None, "i3", "null_user_id"),
            (None, "i4", "null_user_id"),
            ("u5", None, "null_item_id"),
            ("u6", "i6", "null_ts"),
            ("u7", "i7", "unparseable_ts"),
            ("u8", "i8", "negative_ts"),
            ("u9", "i9", "future_ts"),
            ("u10", "i10", "unknown_event_type"),
            ("u11", "i11", "unknown_event_type"),
            ("u12", "i12", None),
        ],
        "user_id string, item_id string, reject_reason string",
    )
    actual = reasons(spark, rows)
    # the torn line's fields are whatever the reader salvaged; only its reason matters
    assert_df_equality(
        actual.withColumn(
            "user_id", F.when(F.col("reject_reason") == "malformed_line", None).otherwise(F.col("user_id"))
        ).withColumn("item_id", F.when(F.col("reject_reason") == "malformed_line", None).otherwise(F.col("item_id"))),
        expected,
        ignore_row_order=True,
        ignore_nullable=True,
    )


def test_first_reason_wins(spark):
    rows = [(None, None, "hover", "garbage", None, None, None)]
    assert reasons(spark, rows).first()["reject_reason"] == "null_user_id"


@pytest.mark.parametrize(
    "fmt,raw,expected",
    [
        ("epoch_s", "874965758", "1997-09-22 22:02:38"),
        ("epoch_ms", "874965758123", "1997-09-22 22:02:38.123"),
        ("auto", "874965758", "1997-09-22 22:02:38"),
        ("auto", "2026-11-26T07:06:45.119Z", "2026-11-26 07:06:45.119"),
        ("yyyy/MM/dd HH:mm", "2026/11/26 07:06", "2026-11-26 07:06:00"),
        ("epoch_s", "soon", None),
    ],
)
def test_parse_ts(spark, fmt, raw, expected):
    df = spark.createDataFrame([(raw,)], "ts_raw string")
    got = df.select(validate.parse_ts(F.col("ts_raw"), fmt).cast("string").alias("t")).first()["t"]
    assert got == expected


EDGE_TS = [
    "2026-11-13T05:40:23.493Z",
    "2026-11-13 05:40:23Z",
    "2026-11-13T05:40:23.1234567Z",  # past micros: truncated alike
    "2026-02-30T05:40:23Z",  # no such day
    "2026-11-13T25:40:23Z",
    "2026-11-13T05:40:23+01:00Z",  # a zone of its own, then 'Z': not a time
    "2026-11-13T05:40:23+01:00",
    "2026-11-13T05:40:23.4+1Z",
    "2026-11-13T05:40:23GMT0Z",
    "2026-11-13T05:40:23UTC",
    "2026-11-13T05:40Z",  # no seconds: the cast refuses a zone there
    "2026-11-13Z",
    "05:40:23Z",
    "2026-11-13T05:40:23.Z",
    "2026-11-13T05:40:23ZZ",
    "+2026-11-13T05:40:23Z",
    " 2026-11-13T05:40:23.5Z ",
    "\t2026-11-13T05:40:23Z",
    "1731480023",
    "",
]


def test_iso_utc_fast_parse_equals_the_cast_in_a_utc_session(spark):
    """The fast path (ISO text ending in 'Z', cast without it) gives exactly what Spark's cast
    gives with the 'Z', on edge cases and on random text from the characters of timestamps."""
    import random

    rng = random.Random(7)
    alphabet = "0123456789--::..TZ +"
    fuzz = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 26))) for _ in range(3000)]
    shaped = [  # ISO-like text with a few characters changed, where the shape check must hold
        "".join(c if rng.random() > 0.08 else rng.choice(alphabet + "UTCGM") for c in "2026-11-13T05:40:23.493Z")
        for _ in range(3000)
    ]
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    df = spark.createDataFrame([(t,) for t in EDGE_TS + fuzz + shaped], "ts_raw string")
    got = df.select(
        "ts_raw",
        validate.parse_ts(F.col("ts_raw"), "auto", utc_session=True).alias("fast"),
        validate.parse_ts(F.col("ts_raw"), "auto").alias("cast"),
    )
    differ = got.where(~F.col("fast").eqNullSafe(F.col("cast"))).collect()
    assert differ == []
    fast = got.where(F.trim("ts_raw").rlike(validate.ISO_UTC))
    assert fast.where(F.col("fast").isNotNull()).count() > 300  # the fuzz reached the fast path


@pytest.mark.parametrize("ts_format", ["auto", "epoch_ms", "yyyy-MM-dd HH:mm:ss"])
def test_normalize_parses_each_text_once_and_as_parse_ts_does(spark, ts_format):
    """normalize reads a time in projections of their own: the plan holds each reading of the text
    once (in one expression, Spark matched, copied and cast every ISO text twice and matched a
    number up to five times), and its times equal parse_ts's on edge cases, numbers and times out
    of range."""
    texts = [*EDGE_TS, "1731474033", "-1731474033000", "9223372036855", "9999-12-31T23:59:59Z", "2026-11-13 05:40:23"]
    rows = [("u", "i", "view", t, None, "2026-11-13", None) for t in texts]
    normalized = validate.normalize(canonical(spark, rows), ts_format)
    plan = normalized._jdf.queryExecution().executedPlan().toString()
    utc = validate.is_utc(spark.conf.get("spark.sql.session.timeZone"))
    parses = {
        "auto": [validate.NUMBER_TEXT, validate.ISO_TEXT, *([validate.ISO_UTC] if utc else [])],
        "epoch_ms": [validate.NUMBER_TEXT],
    }.get(ts_format, ["gettimestamp"])  # to_timestamp, as the plan names it
    assert [plan.count(p) for p in parses] == [1] * len(parses)
    expected = canonical(spark, rows).select(
        "ts_raw", validate.parse_ts(F.col("ts_raw"), ts_format, utc_session=utc).alias("ts")
    )
    assert_df_equality(normalized.select("ts_raw", "ts"), expected, ignore_row_order=True)
    if ts_format not in ("auto", "epoch_ms"):  # what the format cannot read is null, not a failed job
        assert normalized.where(F.col("ts_raw") == "2026-11-13 05:40:23Z").first()["ts"] is None
        bad = [("u", "i", "view", "2026-11-13 05:40:23Z", None, "2026-11-13", None)]
        assert reasons(spark, bad, ts_format).first()["reject_reason"] == "unparseable_ts"


@pytest.mark.parametrize("zone,utc", [("UTC", True), ("Etc/UTC", True), ("utc", True), ("Europe/Paris", False)])
def test_the_fast_parse_is_taken_only_in_a_utc_session(zone, utc):
    assert validate.is_utc(zone) is utc


def test_rejects_view_keeps_raw_values_and_line(spark):
    rows = [
        ("u1", "i1", "hover", "2026-11-26T10:00:00Z", "c1", "2026-11-26", None),
        (None, None, None, None, None, "2026-11-26", 'u2,i2"'),
    ]
    flagged = validate.with_reject_reason(validate.normalize(canonical(spark, rows), "auto"), EVENT_TYPES, LATEST)
    expected = spark.createDataFrame(
        [
            ("u1", "i1", "hover", "2026-11-26T10:00:00Z", "c1", "2026-11-26", "unknown_event_type", None),
            (None, None, None, None, None, "2026-11-26", "malformed_line", 'u2,i2"'),
        ],
        "user_id string, item_id string, event_type string, ts_raw string, category string, "
        "source_dt string, reject_reason string, raw_line string",
    )
    assert_df_equality(validate.rejects_view(flagged), expected, ignore_row_order=True, ignore_nullable=True)


def test_column_mapping_and_missing_column(spark):
    src = spark.createDataFrame(
        [("a", 7, "click", "2026-11-26T00:00:00Z")], "uid string, sku long, action string, at string"
    )
    columns = {"user_id": "uid", "item_id": "sku", "event_type": "action", "ts": "at", "category": None}
    cfg = IngestConfig(format="parquet", columns=columns)
    got = ingest.to_canonical(src, cfg, "view").first()
    assert (got["user_id"], got["item_id"], got["event_type"], got["ts_raw"]) == (
        "a",
        "7",
        "click",
        "2026-11-26T00:00:00Z",
    )
    cfg = dataclasses.replace(cfg, columns={**columns, "ts": "event_time"})
    with pytest.raises(ingest.IngestError, match="event_time"):
        ingest.to_canonical(src, cfg, "view")


def test_timestamp_typed_source_round_trips(spark):
    src = (
        spark.createDataFrame([("u", "i", "view")], "user_id string, item_id string, event_type string")
        .withColumn("ts", F.lit("2026-11-26 07:06:45.119").cast("timestamp"))
        .withColumn("category", F.lit(None).cast("string"))
    )
    canon = ingest.to_canonical(src, IngestConfig(), "view")
    typed = validate.normalize(canon, "auto")
    assert typed.select(F.col("ts").cast("string")).first()[0] == "2026-11-26 07:06:45.119"


# forms a number or a time may take that one reader or another has been seen to read its own way
TRICKY_TS = [
    "1.5d",
    "1731480023D",
    "1731480023f",
    "0x1p30",
    "0X1.8p30",
    "Infinity",
    "-Infinity",
    "inf",
    "NaN",
    "1e400",
    "-1e400",
    "1e3",
    ".5",
    "5.",
    "+7",
    "-0",
    "1_000",
    "1,5",
    "١٢٣",
    "2026-02-30T05:40:23Z",
    "2026-02-29 05:40:23",
    "2024-02-29 05:40:23",
    "2100-02-29T00:00:00Z",
    "2026-04-31 00:00:00",
    "2026-13-01 00:00:00",
    "2026-00-10 00:00:00",
    "2026-11-00 00:00:00",
    "2026-11-13T24:00:00Z",
    "2026-11-13T23:60:00Z",
    "2026-11-13T23:59:60Z",
    "2026-11-13T23:59:59.999999999Z",
    "2026-11-13T05:40:23+18:00",
    "2026-11-13T05:40:23+19:00",
    "2026-11-13T05:40:23+18:30",
    "2026-11-13T05:40:23-18:00",
    "2026-11-13T05:40:23-05:30",
    "2026-11-13T05:40:23+05:60",
    "2026-11-13T05:40",
    "2026-11-13T05:40+01:00",
    "2026-11-13 05:40",
    "2026-11-13",
    "2026-11-13T05",
    "2026-11-13T05:40:23+0100",
    "2026/11/13 05:40:23",
    "Nov 13 2026 05:40:23",
    "13.11.2026 05:40",
    "2026-11-13T05:40:23 UTC",
    "2026-11-13T5:40:23Z",
    "0000-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "9999-12-31T23:59:59Z",
]


def test_the_three_readers_read_every_time_alike(spark):
    """The nightly (Spark, and its column pass: ``validate_arrow``), request time (pandas) and the
    SavedModel graph read the same text as the same instant, or all as unparseable: on the edge
    cases above and on fuzz from the characters of numbers and timestamps. A form one reader
    takes on its own would give a request-time answer the nightly never publishes."""
    import random

    import pandas as pd
    import tensorflow as tf

    from interest import rows
    from interest.models.savedmodel import parse_times

    rng = random.Random(11)
    alphabet = "0123456789--::..TZ +eEdfx"
    fuzz = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24))) for _ in range(1500)]
    shaped = [
        "".join(c if rng.random() > 0.1 else rng.choice(alphabet) for c in template)
        for template in ("2026-11-13T05:40:23.493+01:00", "2024-02-29 23:59:59.1234567Z")
        for _ in range(1500)
    ]
    texts = EDGE_TS + TRICKY_TS + fuzz + shaped
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "i int, ts_raw string")
    nightly = df.select(
        "i", (validate.parse_ts(F.col("ts_raw"), "auto", utc_session=True).cast("double") * 1e6).alias("t")
    )
    spark_us = {r["i"]: (None if r["t"] is None else round(r["t"])) for r in nightly.collect()}
    request = rows.parse_ts(pd.Series(texts, dtype=object), "auto")
    graph_us, parsed = parse_times(tf.constant(texts), "auto")
    column_us, column_parsed = validate_arrow.ts_micros(pa.array(texts), "auto")  # the nightly's pass
    differ = []
    for i, text in enumerate(texts):
        want = spark_us[i]
        at = request.iloc[i]
        got_request = None if pd.isna(at) else int(at.value // 1000)
        got_graph = int(graph_us.numpy()[i]) if bool(parsed.numpy()[i]) else None
        got_column = int(column_us[i]) if column_parsed[i] else None
        if not (want == got_request == got_graph == got_column):
            differ.append((text, want, got_request, got_graph, got_column))
    assert differ == [], f"{len(differ)} texts read differently (text, Spark, request, graph, Arrow): {differ[:15]}"


@pytest.mark.parametrize("ts_format", ["auto", "epoch_s", "epoch_ms"])
def test_a_time_no_reader_can_hold_is_quarantined_not_a_failed_job(spark, ts_format):
    """A number past a long's milliseconds once failed the whole job (``timestamp_millis``
    overflows); such times, and Spark-only forms, are rows with a reason like any bad time."""
    bad = ["1e19", "-9e18", "1e400", "99999999999999999", "1.5d", "0x1p30", "Infinity", "2026-02-30T05:40:23Z"]
    rows = [(f"u{i}", "i1", "view", t, "c1", "2026-11-26", None) for i, t in enumerate(bad)]
    got = {r["user_id"]: r["reject_reason"] for r in reasons(spark, rows, ts_format).collect()}
    assert got == {f"u{i}": "unparseable_ts" for i in range(len(bad))}
