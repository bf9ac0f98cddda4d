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
    got = sessions.clean_events(ranked(spark, rows), sessions.CleanRules(100, "exclude")).select(
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


def rules(gap=30.0, max_events=200, max_minutes=240.0, collapse=True, edges=(60.0,), min_train_steps=3):
    return sessions.StepRules(gap, max_events, max_minutes, collapse, tuple(edges), min_train_steps)


def steps(spark, rows, **kwargs):
    """The steps of ``rows`` under ``rules(**kwargs)``."""
    return sessions.to_steps(ranked(spark, rows), rules(**kwargs))


def session_of(spark, rows, **kwargs):
    df = steps(spark, rows, collapse=False, **kwargs)  # one step per event
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
    df = steps(spark, rows)
    assert [r["item_id"] for r in df.where("user_id = 'u'").orderBy("step_no").collect()] == ["c", "b", "a", "z"]
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
    excluded = sessions.clean_events(df, sessions.CleanRules(3, "exclude")).groupBy("user_id", "reject_reason").count()
    expected = spark.createDataFrame(
        [("bot", "bot_user", 6), ("human", None, 3)], "user_id string, reject_reason string, count long"
    )
    assert_df_equality(excluded, expected, ignore_row_order=True, ignore_nullable=True)
    capped = sessions.clean_events(df, sessions.CleanRules(3, "cap")).where(F.col("reject_reason").isNotNull())
    assert sorted(r["item_id"] for r in capped.collect()) == ["i3", "i4"]
    assert {r["reject_reason"] for r in capped.collect()} == {"bot_cap"}
    with pytest.raises(ValueError, match="bot_policy"):
        sessions.CleanRules(3, "ban")


def test_funnel_repeats_merge_into_one_step(spark):
    rows = [
        ("u", "a", "view", "10:00:00"),
        ("u", "a", "click", "10:00:05"),
        ("u", "a", "cart", "10:00:09"),
        ("u", "b", "view", "10:01:00"),
        ("u", "a", "view", "10:02:00"),  # a again after b: a new step
        ("u", "a", "view", "12:00:00"),
    ]  # a again in a new session: a new step
    got = steps(spark, rows).select(
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
    assert steps(spark, rows, collapse=False).count() == 6


def test_time_gap_buckets(spark):
    edges = [10.0, 60.0, 1800.0]
    df = spark.createDataFrame([(None,), (0.0,), (10.0,), (10.5,), (60.0,), (1799.0,), (1e6,)], "gap double")
    got = [r[0] for r in df.select(sessions.time_gap_bucket(F.col("gap"), edges)).collect()]
    assert got == [1, 2, 2, 3, 3, 4, 5]


def test_step_gaps_follow_user_order(spark):
    rows = [("u", "b", "view", "10:00:30"), ("u", "a", "view", "10:00:00"), ("v", "c", "view", "09:00:00")]
    got = steps(spark, rows, edges=(10.0, 60.0)).select("user_id", "item_id", "gap_s", "time_gap_bucket")
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
        ("u", "a", "view", "10:06:00"),  # a again after b: a third step, still two items
        ("u", "c", "view", "14:00:00"),
        ("v", "a", "view", "10:00:00"),  # the same item for another user: counted for them
    ]
    got = sessions.sessions_table(steps(spark, rows)).select(
        "user_id", "session_idx", "n_events", "n_items", "duration_s"
    )
    expected = spark.createDataFrame(
        [("u", 1, 4, 2, 360.0), ("u", 2, 1, 1, 0.0), ("v", 1, 1, 1, 0.0)],
        "user_id string, session_idx int, n_events long, n_items long, duration_s double",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_day_items_start_after_what_the_previous_run_could_see(spark):
    """The run of the 25th keeps events up to 60 minutes into the 26th (its clock-skew allowance), so
    its recommendations have seen them: the 26th's truth starts after that and runs to what the
    run of the 26th keeps."""
    rows = [
        ("u", "a", "view", "2026-11-25 23:50:00"),  # yesterday
        ("u", "b", "view", "2026-11-25 23:59:00"),  # b's run goes on past midnight: yesterday's run saw it
        ("u", "b", "click", "2026-11-26 00:01:00"),
        ("u", "f", "view", "2026-11-26 00:30:00"),  # inside yesterday's skew allowance: seen by its run
        ("u", "c", "view", "2026-11-26 12:00:00"),
        ("u", "d", "view", "2026-11-27 00:10:00"),  # inside today's allowance: today's run keeps it
        ("u", "g", "view", "2026-11-27 01:30:00"),  # tomorrow's
        ("v", "e", "view", "2026-11-25 10:00:00"),  # nothing today: no row
    ]
    got = sessions.day_items(steps(spark, rows), "2026-11-26", skew_minutes=60)
    expected = spark.createDataFrame([("u", ["c", "d"])], "user_id string, items array<string>")
    assert_df_equality(got, expected, ignore_nullable=True)
    no_skew = sessions.day_items(steps(spark, rows), "2026-11-26")
    expected = spark.createDataFrame([("u", ["f", "c"])], "user_id string, items array<string>")
    assert_df_equality(no_skew, expected, ignore_nullable=True)


def test_held_out_marks_the_last_two_steps_of_users_long_enough_to_evaluate(spark):
    rows = [("u", x, "view", f"10:0{k}:00") for k, x in enumerate("abcd")]
    rows += [("v", x, "view", f"11:0{k}:00") for k, x in enumerate("ab")]  # 2 < min_train_steps
    got = steps(spark, rows).select("user_id", "item_id", "step_no", "held_out")
    expected = spark.createDataFrame(
        [("u", "a", 1, False), ("u", "b", 2, False), ("u", "c", 3, True), ("u", "d", 4, True)]
        + [("v", "a", 1, False), ("v", "b", 2, False)],
        "user_id string, item_id string, step_no int, held_out boolean",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_a_merged_step_keeps_the_smallest_category_and_the_last_events_time(spark):
    df = ranked(
        spark, [("u", "a", "view", "10:00:00"), ("u", "a", "click", "10:00:05"), ("u", "a", "cart", "10:00:09")]
    )
    df = df.withColumn("category", F.when(F.col("event_type") == "view", "z").when(F.col("event_type") == "click", "b"))
    got = sessions.to_steps(df, rules()).select("category", F.col("end_ts").cast("string"), "n_events", "event_rank")
    assert [tuple(r) for r in got.collect()] == [("b", "2026-11-26 10:00:09", 3, 2)]


def reference_steps(events: list[tuple], r: sessions.StepRules) -> list[tuple]:
    """The rules, one event at a time in plain Python: (user, item, secs, rank) sorted by user
    and time -> (user, item, session, step_no, n_events, rank, bucket, held_out) per step."""
    out, by_user = [], {}
    for e in events:
        by_user.setdefault(e[0], []).append(e)
    for user, evs in by_user.items():
        user_steps, session, base, base_secs, prev, chunk_prev = [], 0, 0, 0.0, None, None
        for i, (_, item, secs, rank) in enumerate(evs):
            if prev is None or secs - prev >= r.gap_minutes * 60:
                base, base_secs = i, secs
            chunk = (secs - base_secs) // (r.max_minutes * 60)
            cut = i == base or (i - base) % r.max_events == 0 or chunk != chunk_prev
            session += cut
            if cut or not r.collapse_repeats or user_steps[-1][1] != item:
                user_steps.append([user, item, session, len(user_steps) + 1, 0, rank, secs])
            user_steps[-1][4] += 1
            user_steps[-1][5] = max(user_steps[-1][5], rank)
            prev, chunk_prev = secs, chunk
        n = len(user_steps)
        for k, (u, item, sess, no, count, rank, secs) in enumerate(user_steps):
            gap = None if k == 0 else secs - user_steps[k - 1][6]
            bucket = 1 if gap is None else 2 + sum(edge < gap for edge in r.edges_s)
            out.append((u, item, sess, no, count, rank, bucket, n >= r.min_train_steps and no > n - 2))
    return sorted(out)


def timed_events(spark, rows):
    """rows: (user, item, type, epoch seconds, category), in the order they arrived -> ranked
    events (the seconds as ``ts_raw``) in 3 partitions."""
    df = spark.createDataFrame(
        [(*r, n) for n, r in enumerate(rows)],
        "user_id string, item_id string, event_type string, s long, c string, n long",
    )
    arrival = F.struct(F.lit("f").alias("file"), F.lit(0).cast("long").alias("block"), F.col("n").alias("row"))
    return sessions.with_event_rank(
        df.select(
            "user_id",
            "item_id",
            "event_type",
            F.timestamp_seconds("s").alias("ts"),
            F.col("s").cast("string").alias("ts_raw"),
            F.col("c").alias("category"),
            F.lit("2026-11-26").alias("dt"),
            arrival.alias("ingest_order"),
        ),
        TYPES,
    ).repartition(3)


@pytest.mark.parametrize("batch_rows", [7, 10_000])
def test_steps_match_the_rules_event_by_event_whatever_the_arrow_batches(spark, batch_rows):
    """Random clickstreams of 40 users against the rules applied one event at a time. With Arrow
    batches of 7 rows every user's events are cut across batches and carried to the next."""
    import random

    rng = random.Random(7)
    rows, start = [], 1_790_000_000
    for u in range(40):
        t = start
        for _ in range(rng.randint(1, 60)):
            t += rng.choice([0, 1, 5, 30, 600, 1799, 1800, 5000, 40_000])
            rows.append((f"u{u:02d}", rng.choice("abc"), rng.choice(TYPES), t))
    r = rules(gap=30.0, max_events=7, max_minutes=60.0, edges=(10.0, 600.0, 3600.0))
    df = timed_events(spark, [(*row, "c") for row in rows])
    before = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_rows))
    try:
        got = sessions.to_steps(df, r).collect()
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", before)
    ordered = sorted(rows, key=lambda e: (e[0], e[3]))  # ties in time: the list's order (stable)
    expected = reference_steps([(u, i, float(t), TYPES.index(e)) for u, i, e, t in ordered], r)
    assert (
        sorted(
            (s["user_id"], s["item_id"], s["session_idx"], s["step_no"], s["n_events"], s["event_rank"])
            + (s["time_gap_bucket"], s["held_out"])
            for s in got
        )
        == expected
    )
    assert len(got) < len(rows)  # repeats did merge


@pytest.mark.parametrize("policy", ["exclude", "cap"])
def test_clean_steps_in_one_pass_equal_cleaning_then_steps(spark, policy):
    """The stage's one-pass clean_steps against clean_events then to_steps, on random streams
    with exact copies (of varying category), ties in time and bot-like days, in Arrow batches of
    5 rows (users cut across batches)."""
    import random

    rng = random.Random(11)
    rows = []
    for u in range(12):
        t = 1_790_000_000
        for _ in range(rng.randint(1, 40)):
            t += rng.choice([0, 0, 1, 30, 1800, 40_000])
            row = (f"u{u:02d}", rng.choice("abc"), rng.choice(TYPES), t, rng.choice("xyz"))
            rows += [row] * rng.choice([1, 1, 1, 2, 3])  # exact copies, each with its own arrival
    df = timed_events(spark, rows)
    clean, r = sessions.CleanRules(8, policy), rules(gap=30.0, max_events=7, max_minutes=60.0)
    before = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "5")
    try:
        one = sessions.clean_steps(df, clean, r).cache()
        cleaned = sessions.clean_events(df, clean).cache()
        two = sessions.to_steps(cleaned.where(F.col("reject_reason").isNull()), r)
        step_columns = sessions.STEP_SCHEMA.names
        assert_df_equality(
            one.where(F.col("reject_reason").isNull()).select(*step_columns),
            two,
            ignore_row_order=True,
            ignore_nullable=True,
        )
        reject_columns = [
            "user_id",
            "item_id",
            "event_type",
            "ts",
            "ts_raw",
            "category",
            "dt",
            "copies",
            "reject_reason",
        ]
        bots = cleaned.where(F.col("reject_reason").isNotNull()).select(*reject_columns)
        assert bots.count() > 0  # the random days do reach the limit
        assert_df_equality(
            one.where(F.col("reject_reason").isNotNull()).select(*reject_columns),
            bots,
            ignore_row_order=True,
            ignore_nullable=True,
        )
        # every raw row is behind exactly one output row
        assert one.agg(F.sum("copies")).collect()[0][0] == len(rows)
        kept = one.where(F.col("reject_reason").isNull()).agg(F.sum("n_events")).collect()[0][0]
        assert kept == cleaned.where(F.col("reject_reason").isNull()).count() < len(rows)
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", before)
