"""Dedupe, bots, sessions and funnel merging on small inline frames (exact frames with chispa)."""

from __future__ import annotations

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from interest.etl import sessions

TYPES = ["view", "click", "cart", "purchase"]


def events(spark, rows):
    """rows: (user, item, type, 'HH:MM:SS' on 2026-11-26 or a full timestamp)."""

    def full(t):
        return t if t.startswith("20") else f"2026-11-26 {t}"

    df = spark.createDataFrame(
        [(u, i, e, full(t), n) for n, (u, i, e, t) in enumerate(rows)],
        "user_id string, item_id string, event_type string, ts_s string, n long",
    )
    arrival = F.struct(
        F.lit("part-0").alias("file"), F.lit(0).cast("long").alias("block"), F.col("n").alias("row")
    )  # as ingest.with_ingest_order: the list's order
    return (
        df.withColumn("ts", F.col("ts_s").cast("timestamp"))
        .withColumn("ingest_order", arrival)
        .drop("n")
        .withColumn("ts_raw", F.col("ts_s"))
        .withColumn("category", F.lit("c"))
        .withColumn("dt", F.lit("2026-11-26"))
        .drop("ts_s")
    )


def ranked(spark, rows):
    return sessions.with_event_rank(events(spark, rows), TYPES)


def test_dedupe_counts_copies(spark):
    rows = [
        ("u", "a", "view", "10:00:00"),
        ("u", "a", "view", "10:00:00"),
        ("u", "a", "view", "10:00:00"),
        ("u", "a", "click", "10:00:00"),
        ("u", "a", "view", "10:00:01"),
    ]
    got = sessions.dedupe(events(spark, rows)).select(
        "item_id", "event_type", F.col("ts").cast("string").alias("ts"), "copies"
    )
    expected = spark.createDataFrame(
        [
            ("a", "view", "2026-11-26 10:00:00", 3),
            ("a", "click", "2026-11-26 10:00:00", 1),
            ("a", "view", "2026-11-26 10:00:01", 1),
        ],
        "item_id string, event_type string, ts string, copies long",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def session_of(spark, rows, gap=30.0, max_events=200, max_minutes=240.0):
    df = sessions.sessionize(ranked(spark, rows), gap, max_events, max_minutes)
    return df.select("user_id", "item_id", "session_idx").orderBy("user_id", "ts", "item_id")


def test_session_boundary_exactly_at_gap(spark):
    rows = [
        ("u", "a", "view", "10:00:00"),
        ("u", "b", "view", "10:29:59.999"),  # just under 30 min later: same session
        ("u", "c", "view", "10:59:59.999"),  # exactly 30 min after b: new session
        ("u", "d", "view", "11:29:59"),
    ]  # 29:59.001 later: same session as c
    got = session_of(spark, rows)
    expected = spark.createDataFrame(
        [("u", "a", 1), ("u", "b", 1), ("u", "c", 2), ("u", "d", 2)], "user_id string, item_id string, session_idx int"
    )
    assert_df_equality(got, expected, ignore_nullable=True)


def test_out_of_order_input_and_ties_follow_arrival_not_ids(spark):
    # Input shuffled in time; three events share a timestamp: the order they arrived in the
    # source breaks the tie (c, b, a), neither the funnel stage nor the item id (a, b, c).
    rows = [
        ("u", "z", "view", "12:00:00"),
        ("u", "c", "view", "09:00:00"),
        ("u", "b", "click", "09:00:00"),
        ("u", "a", "view", "09:00:00"),
        ("v", "x", "view", "08:00:00"),
    ]
    df = sessions.sessionize(ranked(spark, rows), 30.0, 200, 240.0)
    order = [r["item_id"] for r in df.where("user_id = 'u'").orderBy(*sessions.ORDER).collect()]
    assert order == ["c", "b", "a", "z"]
    steps = sessions.with_step_gaps(sessions.to_steps(df, True), [60.0]).where("user_id = 'u'")
    assert [r["item_id"] for r in steps.orderBy("step_no").collect()] == ["c", "b", "a", "z"]
    got = df.select("user_id", "item_id", "session_idx")
    expected = spark.createDataFrame(
        [("u", "c", 1), ("u", "b", 1), ("u", "a", 1), ("u", "z", 2), ("v", "x", 1)],
        "user_id string, item_id string, session_idx int",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_long_sessions_are_cut_by_count_and_duration(spark):
    by_count = [("u", f"i{k}", "view", f"10:00:{k:02d}") for k in range(5)]
    got = [r["session_idx"] for r in session_of(spark, by_count, max_events=2).collect()]
    assert got == [1, 1, 2, 2, 3]
    by_time = [("u", f"i{k}", "view", f"{10 + k // 3}:{(k % 3) * 20:02d}:00") for k in range(7)]
    got = [r["session_idx"] for r in session_of(spark, by_time, max_minutes=60).collect()]
    # events every 20 minutes from 10:00: cut every 60 minutes since the session began
    assert got == [1, 1, 1, 2, 2, 2, 3]


def test_bots_excluded_or_capped(spark):
    rows = [("bot", f"i{k}", "view", f"10:00:{k:02d}") for k in range(5)]
    rows += [("bot", "j", "view", "2026-11-25 10:00:00")]
    rows += [("human", f"i{k}", "view", f"11:00:{k:02d}") for k in range(3)]
    df = ranked(spark, rows)
    excluded = sessions.flag_bots(df, 3, "exclude").groupBy("user_id", "reject_reason").count()
    expected = spark.createDataFrame(
        [("bot", "bot_user", 6), ("human", None, 3)], "user_id string, reject_reason string, count long"
    )
    assert_df_equality(excluded, expected, ignore_row_order=True, ignore_nullable=True)
    capped = sessions.flag_bots(df, 3, "cap").where(F.col("reject_reason").isNotNull())
    assert sorted(r["item_id"] for r in capped.collect()) == ["i3", "i4"]
    assert {r["reject_reason"] for r in capped.collect()} == {"bot_cap"}
    with pytest.raises(ValueError, match="bot_policy"):
        sessions.flag_bots(df, 3, "ban")


def test_funnel_repeats_merge_into_one_step(spark):
    rows = [
        ("u", "a", "view", "10:00:00"),
        ("u", "a", "click", "10:00:05"),
        ("u", "a", "cart", "10:00:09"),
        ("u", "b", "view", "10:01:00"),
        ("u", "a", "view", "10:02:00"),  # a again after b: a new step
        ("u", "a", "view", "12:00:00"),
    ]  # a again in a new session: a new step
    evs = sessions.sessionize(ranked(spark, rows), 30.0, 200, 240.0)
    got = sessions.to_steps(evs, collapse_repeats=True).select(
        "item_id", "session_idx", F.col("ts").cast("string").alias("ts"), "event_rank", "n_events"
    )
    expected = spark.createDataFrame(
        [
            ("a", 1, "2026-11-26 10:00:00", 2, 3),
            ("b", 1, "2026-11-26 10:01:00", 0, 1),
            ("a", 1, "2026-11-26 10:02:00", 0, 1),
            ("a", 2, "2026-11-26 12:00:00", 0, 1),
        ],
        "item_id string, session_idx int, ts string, event_rank int, n_events long",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
    assert sessions.to_steps(evs, collapse_repeats=False).count() == 6


def test_time_gap_buckets(spark):
    edges = [10.0, 60.0, 1800.0]
    df = spark.createDataFrame([(None,), (0.0,), (10.0,), (10.5,), (60.0,), (1799.0,), (1e6,)], "gap double")
    got = [r[0] for r in df.select(sessions.time_gap_bucket(F.col("gap"), edges)).collect()]
    assert got == [1, 2, 2, 3, 3, 4, 5]


def test_step_gaps_follow_user_order(spark):
    rows = [("u", "b", "view", "10:00:30"), ("u", "a", "view", "10:00:00"), ("v", "c", "view", "09:00:00")]
    evs = sessions.sessionize(ranked(spark, rows), 30.0, 200, 240.0)
    got = sessions.with_step_gaps(sessions.to_steps(evs, True), [10.0, 60.0]).select(
        "user_id", "item_id", "gap_s", "time_gap_bucket"
    )
    expected = spark.createDataFrame(
        [("u", "a", None, 1), ("u", "b", 30.0, 3), ("v", "c", None, 1)],
        "user_id string, item_id string, gap_s double, time_gap_bucket int",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_sessions_table(spark):
    rows = [
        ("u", "a", "view", "10:00:00"),
        ("u", "a", "click", "10:00:10"),
        ("u", "b", "view", "10:05:00"),
        ("u", "c", "view", "14:00:00"),
    ]
    evs = sessions.sessionize(ranked(spark, rows), 30.0, 200, 240.0)
    steps = sessions.to_steps(evs, True)
    got = sessions.sessions_table(steps).select("session_idx", "n_events", "n_items", "duration_s")
    expected = spark.createDataFrame(
        [(1, 3, 2, 300.0), (2, 1, 1, 0.0)], "session_idx int, n_events long, n_items long, duration_s double"
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_day_items_keep_a_step_merged_across_midnight_and_leave_out_the_next_day(spark):
    rows = [
        ("u", "a", "view", "2026-11-25 23:50:00"),  # yesterday only
        ("u", "b", "view", "2026-11-25 23:59:00"),  # b's run goes on past midnight: it counts today
        ("u", "b", "click", "2026-11-26 00:01:00"),
        ("u", "c", "view", "2026-11-26 12:00:00"),
        ("u", "d", "view", "2026-11-27 00:10:00"),  # tomorrow (inside the skew allowance)
        ("v", "e", "view", "2026-11-25 10:00:00"),  # nothing today: no row
    ]
    evs = sessions.sessionize(ranked(spark, rows), 30.0, 200, 240.0)
    got = sessions.day_items(sessions.to_steps(evs, True), "2026-11-26")
    expected = spark.createDataFrame([("u", ["b", "c"])], "user_id string, items array<string>")
    assert_df_equality(got, expected, ignore_nullable=True)
