"""Clean events -> sessions -> steps: dedupe, bot filtering, sessionization, funnel merging.

All functions are pure ``DataFrame -> DataFrame``. A user's events are always ordered by
``(ts, ingest_order, event_rank)``: event time, then the order in which the rows arrived in the
source (file, split, row; see ``ingest.with_ingest_order``), then funnel stage. Ties in time are
broken the same way on every run, and never by an identifier: ids carry no meaning, and sorting by
them would plant a signal (the next item "follows" the last one in id order) that real traffic
does not have and a model would learn.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from interest.etl.validate import BOT_CAPPED, BOT_EXCLUDED, run_end
from interest.schema import HELD_OUT_STEPS

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
    # needs then also serves the per-user-and-day bot windows and the steps that follow; ts
    # comes before item_id and event_type, so the sort compares strings only on ties in time
    return df.groupBy("user_id", F.to_date("ts").alias("day"), "ts", "item_id", "event_type").agg(
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


STEP_SCHEMA = T.StructType(
    [
        T.StructField(name, kind)
        for name, kind in [
            ("user_id", T.StringType()),
            ("session_idx", T.IntegerType()),
            ("ts", T.TimestampType()),
            ("item_id", T.StringType()),
            ("event_rank", T.IntegerType()),
            ("category", T.StringType()),
            ("n_events", T.LongType()),
            ("end_ts", T.TimestampType()),
            ("step_no", T.IntegerType()),
            ("gap_s", T.DoubleType()),
            ("time_gap_bucket", T.IntegerType()),
            ("held_out", T.BooleanType()),
        ]
    ]
)  # what to_steps returns


# A session longer than either is split: a browser tab left open for a day is not one visit
MAX_SESSION_EVENTS = 200
MAX_SESSION_MINUTES = 240.0


@dataclass(frozen=True)
class StepRules:
    """How events become steps: the session cuts, merging, gap buckets and the held-out split."""

    gap_minutes: float  # a gap of at least this starts a new session
    max_events: int  # ... as does every max_events-th event of a session
    max_minutes: float  # ... and every max_minutes since the session's first event
    collapse_repeats: bool  # consecutive events on one item in a session merge into one step
    edges_s: tuple[float, ...]  # upper edges of the time-gap buckets
    min_train_steps: int  # users with fewer steps are not evaluated, so hold nothing out


def to_steps(events: DataFrame, rules: StepRules) -> DataFrame:
    """Clean events (with ``event_rank``) -> steps (STEP_SCHEMA): sessions, merged repeats, step
    numbers, gaps and the held-out flag, in one sort and one vectorised pass per partition.

    Sessions: a new one starts when the gap to the user's previous event is at least
    ``gap_minutes``, and a long one is cut every ``max_events`` events and every ``max_minutes``
    since it began; ``session_idx`` counts them from 1 per user. Steps: consecutive events on one
    item in a session merge into one step that keeps the first event's time, the deepest funnel
    stage reached (so "view, click, cart" of one item is a single cart step), the
    smallest category, how many events merged (``n_events``) and the last one's time
    (``end_ts``). ``step_no`` numbers a user's steps from 1 in time order, ``gap_s`` is the time
    since the previous step and ``time_gap_bucket`` its bucket (:func:`time_gap_bucket`).
    ``held_out``: one of the last ``HELD_OUT_STEPS`` steps of a user with at least
    ``min_train_steps`` (validation and test targets), which counts must skip.

    As Spark windows and aggregates this took eight window operators and three sorts of the
    events; here they are sorted once by user and ``ORDER`` within their partitions and walked
    with NumPy, each Arrow batch at once (a user cut across batches is carried to the next).
    Every user's events must be in one partition: the frame is hash-partitioned by ``user_id``
    (a no-op when it already is, as in the pipeline).
    """
    # Sorted by Spark in ORDER (behind the day, which deduplication sorted by, and which ts
    # determines); the arrival order then need not travel to Python, and a step is numbered by it.
    prefix = ["user_id", "day"] if "day" in events.columns else ["user_id"]
    ordered = (
        events.repartition("user_id")
        .sortWithinPartitions(*prefix, *ORDER)
        .select("user_id", "ts", "item_id", "event_rank", "category")
    )

    def run(batches: Iterable[pa.RecordBatch]) -> Iterable[pa.RecordBatch]:
        carried: list[pa.RecordBatch] = []  # the last user of the batch so far: may go on in the next
        for batch in batches:
            if not batch.num_rows:
                continue
            table = pa.Table.from_batches([*carried, batch]).combine_chunks()
            users = table.column("user_id").chunk(0)
            last = users[len(users) - 1]
            first_of_last = len(users) - int(np.asarray(pc.equal(users, last)).sum())  # sorted: contiguous
            carried = [b for b in table.slice(first_of_last).to_batches() if b.num_rows]
            if first_of_last:
                yield from steps_of_users(table.slice(0, first_of_last), rules).to_batches()
        if carried:
            yield from steps_of_users(pa.Table.from_batches(carried), rules).to_batches()

    return ordered.mapInArrow(run, STEP_SCHEMA)


def _flags_after(values: pa.Array) -> np.ndarray:
    """[n] bool: True where a row differs from the one before it (and at row 0)."""
    out = np.ones(len(values), bool)
    if len(values) > 1:
        out[1:] = np.asarray(pc.fill_null(pc.not_equal(values[1:], values[:-1]), True))
    return out


def steps_of_users(table: pa.Table, rules: StepRules) -> pa.Table:
    """:func:`to_steps` on whole users' events, sorted by user and ``ORDER`` (pure Arrow + NumPy)."""
    col = {name: table.column(name).combine_chunks() for name in table.column_names}  # flat arrays
    n = table.num_rows
    index = np.arange(n)
    new_user = _flags_after(col["user_id"])  # [n]
    user_start = np.maximum.accumulate(np.where(new_user, index, 0))  # each row's user's first row
    ts = col["ts"]
    secs = np.asarray(ts.cast(pa.int64())).astype(np.float64) / 1e6  # as Spark casts a timestamp
    gap = np.full(n, np.nan)
    gap[1:] = secs[1:] - secs[:-1]
    # sessions: a base session starts at a user's first event or after a long gap; it is cut
    # every max_events events and every max_minutes since it began
    base_start = np.maximum.accumulate(np.where(new_user | (gap >= rules.gap_minutes * 60), index, 0))
    pos = index - base_start
    chunk = np.floor((secs - secs[base_start]) / (rules.max_minutes * 60))
    cut = (pos == 0) | (pos % rules.max_events == 0)
    cut[1:] |= chunk[1:] != chunk[:-1]
    counted = np.cumsum(cut)
    session = counted - counted[user_start] + 1  # [n], from 1 per user
    # steps: a run of one item within a session
    starts_run = cut | new_user
    if rules.collapse_repeats:
        starts_run |= _flags_after(col["item_id"])
    else:
        starts_run[:] = True
    starts = np.flatnonzero(starts_run)  # [s]
    ends = np.append(starts[1:], n) - 1
    category = col["category"].take(pa.array(starts))
    merged = np.flatnonzero(ends > starts)  # the runs of more than one event: the smallest category
    if len(merged):
        run_of = np.repeat(np.arange(len(starts)), ends - starts + 1)
        inside = np.flatnonzero(np.isin(run_of, merged))
        smallest = (
            pa.table({"run": run_of[inside], "category": col["category"].take(pa.array(inside))})
            .group_by("run", use_threads=False)
            .aggregate([("category", "min")])
            .sort_by("run")
        )
        pick = np.arange(len(starts))
        pick[merged] = len(starts) + np.arange(len(merged))  # the merged runs take their minimum
        category = pa.concat_arrays([category, smallest.column("category_min").combine_chunks()]).take(pa.array(pick))
    step_user = col["user_id"].take(pa.array(starts))
    first_step = np.maximum.accumulate(np.where(new_user[starts], np.arange(len(starts)), 0))  # [s]
    step_no = np.arange(len(starts)) - first_step + 1
    step_secs = secs[starts]
    step_gap = np.full(len(starts), np.nan)
    step_gap[1:] = step_secs[1:] - step_secs[:-1]
    step_gap[first_step == np.arange(len(starts))] = np.nan
    edges = np.asarray(rules.edges_s, dtype=np.float64)
    bucket = np.where(np.isnan(step_gap), 1, (edges[None, :] < step_gap[:, None]).sum(axis=1) + 2)
    steps_of_user = np.bincount(first_step, minlength=len(starts))[first_step]  # [s]: the user's step count
    held_out = (steps_of_user >= rules.min_train_steps) & (step_no > steps_of_user - HELD_OUT_STEPS)
    return pa.table(
        {
            "user_id": step_user,
            "session_idx": pa.array(session[starts], pa.int32()),
            "ts": ts.take(pa.array(starts)),
            "item_id": col["item_id"].take(pa.array(starts)),
            "event_rank": pa.array(np.maximum.reduceat(np.asarray(col["event_rank"]), starts), pa.int32())
            if n
            else pa.array([], pa.int32()),
            "category": category,
            "n_events": pa.array(ends - starts + 1, pa.int64()),
            "end_ts": ts.take(pa.array(ends)),
            "step_no": pa.array(step_no, pa.int32()),
            "gap_s": pa.array(step_gap, pa.float64(), from_pandas=True),  # NaN -> null: a user's first step
            "time_gap_bucket": pa.array(bucket, pa.int32()),
            "held_out": pa.array(held_out, pa.bool_()),
        }
    )


def time_gap_bucket(gap_s: Column, edges_s: list[float]) -> Column:
    """0 = padding, 1 = first step (no previous), 2.. = the gap's bucket by the upper edges."""
    edges = F.array(*[F.lit(float(e)) for e in edges_s])
    below = F.size(F.filter(edges, lambda e: e < gap_s))
    return F.when(gap_s.isNull(), F.lit(1)).otherwise(below + 2).cast("int")


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


def day_items(steps: DataFrame, date: str, skew_minutes: int = 0) -> DataFrame:
    """Each user's steps after the run of the day before could see them, up to what the run of
    ``date`` sees, in time order: ``user_id``, ``items`` (item ids).

    Tomorrow's truth: the nightly of D scores D-1's published recommendations against these. The
    run of D-1 kept events up to ``skew_minutes`` into D (``validate.run_end``), so its
    recommendations already reflect them: the truth starts after that, at the first step that
    began later, and runs to the end of what the run of D keeps. A step merged across that
    boundary belongs to the day it began.
    """
    previous = (dt.date.fromisoformat(date) - dt.timedelta(days=1)).isoformat()
    start, end = (F.lit(f"{run_end(d, skew_minutes):%Y-%m-%d %H:%M:%S}").cast("timestamp") for d in (previous, date))
    today = steps.where((F.col("ts") > start) & (F.col("ts") <= end))
    ordered = F.array_sort(F.collect_list(F.struct("step_no", "item_id")))  # steps are numbered in ORDER
    return today.groupBy("user_id").agg(ordered.alias("_s")).select("user_id", F.col("_s.item_id").alias("items"))
