"""Clean events -> sessions -> steps: dedupe, bot filtering, sessionization, funnel merging.

All functions are pure ``DataFrame -> DataFrame``. A user's events are always ordered by
``(ts, ingest_order, event_rank)``: event time, then the order in which the rows arrived in the
source (file, split, row; see ``ingest.with_ingest_order``), then funnel stage. Ties in time are
broken the same way on every run, and never by an identifier: ids carry no meaning, and sorting by
them would plant a signal (the next item "follows" the last one in id order) that real traffic
does not have and a model would learn.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from interest.etl.validate import BOT_CAPPED, BOT_EXCLUDED

KEYS = ["user_id", "item_id", "event_type", "ts"]
ORDER = ["ts", "ingest_order", "event_rank"]


def with_event_rank(df: DataFrame, event_types: list[str]) -> DataFrame:
    """Funnel stage of each event (0 = first type in config); used for ordering and merging."""
    rank = F.lit(None).cast("int")
    for i, name in reversed(list(enumerate(event_types))):
        rank = F.when(F.col("event_type") == name, F.lit(i)).otherwise(rank)
    return df.withColumn("event_rank", rank)


def dedupe(df: DataFrame) -> DataFrame:
    """Collapse exact duplicates (same user, item, type, ts) to one row with a ``copies`` count.

    Aggregating (rather than dropDuplicates) keeps the surviving row's other columns
    deterministic and lets the job count ``copies - 1`` removed rows per survivor. Adds ``day``,
    the event's UTC date, which the bot rules count by.
    """
    # grouped by the UTC day too (a function of ts, so the groups are the same): the sort this
    # needs then also serves the per-user-and-day bot windows that follow
    return df.groupBy("user_id", F.to_date("ts").alias("day"), *KEYS[1:]).agg(
        F.min("category").alias("category"),
        F.min("dt").alias("dt"),
        F.min("ts_raw").alias("ts_raw"),
        F.min("ingest_order").alias("ingest_order"),  # the first arrival of the copies
        F.count(F.lit(1)).alias("copies"),
    )


def flag_bots(df: DataFrame, max_events_per_day: int, policy: str) -> DataFrame:
    """Add ``reject_reason`` for bot-like volume (more than ``max_events_per_day`` on some day).

    ``exclude`` rejects every row of such a user; ``cap`` keeps their first events of each day
    up to the threshold and rejects the rest.
    """
    day = F.col("day") if "day" in df.columns else F.to_date("ts")
    per_day = Window.partitionBy("user_id", day)
    if policy == "exclude":
        flagged = df.withColumn("_n", F.count(F.lit(1)).over(per_day)).withColumn(
            "_busiest", F.max("_n").over(Window.partitionBy("user_id"))
        )
        reason = F.when(F.col("_busiest") > max_events_per_day, F.lit(BOT_EXCLUDED))
    elif policy == "cap":
        order = per_day.orderBy(*ORDER)
        flagged = df.withColumn("_n", F.row_number().over(order)).withColumn("_busiest", F.lit(0))
        reason = F.when(F.col("_n") > max_events_per_day, F.lit(BOT_CAPPED))
    else:
        raise ValueError(f"sessionize.bot_policy must be exclude or cap, not {policy!r}")
    return flagged.withColumn("reject_reason", reason.cast("string")).drop("_n", "_busiest")


def sessionize(df: DataFrame, gap_minutes: float, max_events: int, max_minutes: float) -> DataFrame:
    """Add ``session_idx`` (1-based per user) and ``gap_s`` (seconds since the user's previous event).

    A new session starts when the gap to the previous event is at least ``gap_minutes``, and a
    long session is cut every ``max_events`` events and every ``max_minutes`` since it began.
    """
    # Every window here runs over one ordering, (user_id, ts, ingest_order, event_rank), so Spark
    # sorts the events once: a base session's start is carried forward as a running maximum
    # (row numbers and times only grow along the order) instead of windowing by base session.
    by_user = Window.partitionBy("user_id").orderBy(*ORDER)
    running = by_user.rowsBetween(Window.unboundedPreceding, 0)
    secs = F.col("ts").cast("double")
    df = df.withColumn("gap_s", secs - F.lag(secs).over(by_user))
    df = df.withColumn("_rn", F.row_number().over(by_user)).withColumn(
        "_new_base", F.col("gap_s").isNull() | (F.col("gap_s") >= gap_minutes * 60)
    )
    df = df.withColumn("_pos", F.col("_rn") - F.max(F.when(F.col("_new_base"), F.col("_rn"))).over(running)).withColumn(
        "_chunk", F.floor((secs - F.max(F.when(F.col("_new_base"), secs)).over(running)) / (max_minutes * 60))
    )
    # the previous row is in the same base session unless _pos is 0, which cuts anyway
    cut = (F.col("_pos") == 0) | (F.col("_pos") % max_events == 0) | (F.col("_chunk") != F.lag("_chunk").over(by_user))
    df = df.withColumn("_new", F.when(cut, 1).otherwise(0))
    session = F.sum("_new").over(running)
    return df.withColumn("session_idx", session.cast("int")).drop("_rn", "_new_base", "_pos", "_chunk", "_new")


def to_steps(df: DataFrame, collapse_repeats: bool) -> DataFrame:
    """Sessionized events -> steps: consecutive events on one item in a session merge into one.

    A merged step keeps the first event's time and the deepest funnel stage reached, so
    "view, click, cart" of one item becomes a single cart step. ``n_events`` counts what merged
    and ``end_ts`` is the last merged event's time.
    """
    cols = ["user_id", "session_idx", "ts", "ingest_order", "item_id", "event_rank", "category", "n_events", "end_ts"]
    if not collapse_repeats:
        return df.withColumn("n_events", F.lit(1)).withColumn("end_ts", F.col("ts")).select(*cols)
    # windows over the user's whole ordering (the one sessionize sorted by), not per session: a
    # run also ends where the session does, and its number is then unique within the user
    by_user = Window.partitionBy("user_id").orderBy(*ORDER)
    same = (F.lag("item_id").over(by_user) == F.col("item_id")) & (
        F.lag("session_idx").over(by_user) == F.col("session_idx")
    )
    changed = F.when(same, 0).otherwise(1)
    run = F.sum("_changed").over(by_user.rowsBetween(Window.unboundedPreceding, 0))
    df = df.withColumn("_changed", changed).withColumn("_run", run)
    return (
        df.groupBy("user_id", "session_idx", "_run")
        .agg(
            F.min("ts").alias("ts"),
            F.min(F.struct("ts", "ingest_order"))["ingest_order"].alias("ingest_order"),  # first event's
            F.first("item_id").alias("item_id"),
            F.max("event_rank").alias("event_rank"),
            F.min("category").alias("category"),
            F.count(F.lit(1)).alias("n_events"),
            F.max("ts").alias("end_ts"),  # the last merged event's time
        )
        .select(*cols)
    )


def time_gap_bucket(gap_s: Column, edges_s: list[float]) -> Column:
    """0 = padding, 1 = first step (no previous), 2.. = the gap's bucket by the upper edges."""
    edges = F.array(*[F.lit(float(e)) for e in edges_s])
    below = F.size(F.filter(edges, lambda e: e < gap_s))
    return F.when(gap_s.isNull(), F.lit(1)).otherwise(below + 2).cast("int")


def with_step_gaps(steps: DataFrame, edges_s: list[float]) -> DataFrame:
    """Add ``step_no`` (1-based position in the user's ordered steps), ``gap_s`` since the
    previous step and its ``time_gap_bucket``. Later stages order steps by ``step_no`` alone."""
    by_user = Window.partitionBy("user_id").orderBy(*ORDER)
    secs = F.col("ts").cast("double")
    return (
        steps.withColumn("step_no", F.row_number().over(by_user).cast("int"))
        .withColumn("gap_s", secs - F.lag(secs).over(by_user))
        .withColumn("time_gap_bucket", time_gap_bucket(F.col("gap_s"), edges_s))
    )


def sessions_table(steps: DataFrame) -> DataFrame:
    """One row per session: bounds, size and duration (for distributions and analysis).

    Read off the steps (merged events keep their count and the last one's time), so the stage
    never has to keep the per-event frame."""
    return (
        steps.groupBy("user_id", "session_idx")
        .agg(
            F.min("ts").alias("start_ts"),
            F.max("end_ts").alias("end_ts"),
            F.sum("n_events").cast("long").alias("n_events"),
            F.size(F.collect_set("item_id")).cast("long").alias("n_items"),  # one pass, no Expand
        )
        .withColumn("duration_s", F.col("end_ts").cast("double") - F.col("start_ts").cast("double"))
    )


def day_items(steps: DataFrame, date: str) -> DataFrame:
    """Each user's steps on ``date`` (UTC), in time order: ``user_id``, ``items`` (item ids).

    Tomorrow's truth: the nightly of D scores D-1's published recommendations against these. A
    step merged across midnight counts for ``date`` when any of its events falls on it.
    """
    start = F.to_timestamp(F.lit(date))
    today = steps.where((F.col("end_ts") >= start) & (F.col("ts") < start + F.expr("INTERVAL 1 DAY")))
    ordered = F.array_sort(F.collect_list(F.struct(*[F.col(c) for c in ORDER], F.col("item_id"))))
    return today.groupBy("user_id").agg(ordered.alias("_s")).select("user_id", F.col("_s.item_id").alias("items"))
