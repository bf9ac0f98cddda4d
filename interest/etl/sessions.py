"""Clean events -> sessions -> steps: dedupe, bot filtering, sessionization, funnel merging.

The Spark functions are pure ``DataFrame -> DataFrame``; the rules themselves run per user on
Arrow tables (``clean_users``, ``steps_of_users``), each user's events sorted once by Spark. A
user's events are always ordered by ``(ts, ingest_order, event_rank)``: event time, then the order
in which the rows arrived in the source (file, split, row; see ``ingest.with_ingest_order``), then
funnel stage. Ties in time are broken the same way on every run, and never by an identifier: ids
carry no meaning, and sorting by them would plant a signal (the next item "follows" the last one
in id order) that real traffic does not have and a model would learn.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from interest.etl import validate_arrow
from interest.etl.ingest import CORRUPT
from interest.etl.validate import BOT_CAPPED, BOT_EXCLUDED, run_end, trim_text
from interest.schema import HELD_OUT_STEPS

ORDER = ["ts", "ingest_order", "event_rank"]


def with_event_rank(df: DataFrame, event_types: list[str]) -> DataFrame:
    """Funnel stage of each event (0 = first type in config); used for ordering and merging."""
    rank = F.lit(None).cast("int")
    for i, name in reversed(list(enumerate(event_types))):
        rank = F.when(F.col("event_type") == name, F.lit(i)).otherwise(rank)
    return df.withColumn("event_rank", rank)


@dataclass(frozen=True)
class CleanRules:
    """How valid events are cleaned: exact copies collapse to one, bot-like volume is rejected."""

    max_events_per_day: int  # a user above this many events on some UTC day is bot-like
    policy: str  # exclude: reject every event of such a user; cap: reject their events past the limit

    def __post_init__(self) -> None:
        if self.policy not in ("exclude", "cap"):
            raise ValueError(f"sessionize.bot_policy must be exclude or cap, not {self.policy!r}")


def clean_users(table: pa.Table, rules: CleanRules) -> pa.Table:
    """Whole users' valid events, sorted by user and ``ORDER`` -> their events deduplicated, with
    ``copies`` and ``reject_reason`` (null, or a bot reason). Pure Arrow + NumPy; keeps the order.

    Exact copies (same user, time, item and event type) collapse to the first to arrive, which
    takes the smallest ``category``, ``ts_raw`` and ``dt`` among them (where the table has them)
    and counts them in ``copies``. Bots are judged on the deduplicated events by UTC day: with
    ``exclude`` every event of a user who passed ``max_events_per_day`` on some day is rejected
    (``bot_user``); with ``cap`` only each day's events past the limit are (``bot_cap``).
    """
    n = table.num_rows
    col = {name: table.column(name).combine_chunks() for name in table.column_names}  # flat arrays
    new_user = flags_after(col["user_id"])  # [n]
    micros = np.asarray(col["ts"].cast(pa.int64()))
    same_time = np.zeros(n, bool)  # a row whose user and time equal the previous row's
    same_time[1:] = ~new_user[1:] & (micros[1:] == micros[:-1])
    tied = np.flatnonzero(same_time | np.append(same_time[1:], False))  # rows in runs of one time
    keep = np.ones(n, bool)
    copies = np.ones(n, np.int64)
    pick = {}  # column -> row to take its value from (the copies' smallest)
    if len(tied):  # copies can only be among rows tied in time: group those by the full key
        mins = [c for c in ("category", "ts_raw", "dt") if c in col]
        groups = (
            pa.table(
                {
                    "row": pa.array(tied),
                    **{c: col[c].take(pa.array(tied)) for c in ("user_id", "ts", "item_id", "event_type", *mins)},
                }
            )
            .group_by(["user_id", "ts", "item_id", "event_type"], use_threads=False)
            .aggregate([("row", "min"), ("row", "count"), *[(c, "min") for c in mins]])
        )
        first = np.asarray(groups.column("row_min"))  # sorted by ORDER: the first copy arrived first
        keep[tied] = False
        keep[first] = True
        copies[first] = np.asarray(groups.column("row_count"))
        for c in mins:
            pick[c] = _put(col[c], first, groups.column(f"{c}_min").combine_chunks())
    kept = np.flatnonzero(keep)  # [k]
    out = table.take(pa.array(kept))
    for c, values in pick.items():
        out = out.set_column(out.schema.get_field_index(c), c, values.take(pa.array(kept)))
    # bots, by UTC day of the deduplicated events
    user_new, day = new_user[kept], np.floor_divide(micros[kept], 86_400_000_000)
    day_new = user_new.copy()
    day_new[1:] |= day[1:] != day[:-1]
    day_run = np.cumsum(day_new) - 1  # [k]: the row's (user, day)
    if rules.policy == "exclude":
        per_day = np.bincount(day_run)[day_run]  # [k]: events of the row's user on its day
        user_run = np.cumsum(user_new) - 1
        busiest = np.zeros(user_run[-1] + 1 if len(kept) else 0, np.int64)
        np.maximum.at(busiest, user_run, per_day)
        rejected, reason = busiest[user_run] > rules.max_events_per_day, BOT_EXCLUDED
    else:
        index = np.arange(len(kept))
        nth = index - np.maximum.accumulate(np.where(day_new, index, 0)) + 1  # 1.. within the day
        rejected, reason = nth > rules.max_events_per_day, BOT_CAPPED
    return out.append_column("copies", pa.array(copies[kept], pa.int64())).append_column(
        "reject_reason", pc.if_else(pa.array(rejected, pa.bool_()), reason, pa.scalar(None, pa.string()))
    )


def _sorted_by_user(events: DataFrame) -> DataFrame:
    """Every user's events in one partition, sorted by user and ``ORDER``."""
    return events.repartition("user_id").sortWithinPartitions("user_id", *ORDER)


def by_whole_users(
    batches: Iterable[pa.RecordBatch], fn: Callable[[pa.Table], pa.Table], key: str = "user_id"
) -> Iterable[pa.RecordBatch]:
    """``fn`` over Arrow batches of rows sorted by user (or by ``key``, a user's hash), each call
    on whole users (a user cut across batches is carried to the next; rows without a user,
    rejects, may be cut anywhere)."""
    carried: list[pa.RecordBatch] = []  # the last user of the batch so far: may go on in the next
    for batch in batches:
        if not batch.num_rows:
            continue
        table = pa.Table.from_batches([*carried, batch]).combine_chunks()
        users = table.column(key).chunk(0)
        last = users[len(users) - 1]
        same = pc.fill_null(pc.equal(users, last), False)
        first_of_last = len(users) - int(np.asarray(same).sum())  # sorted: contiguous
        carried = [b for b in table.slice(first_of_last).to_batches() if b.num_rows]
        if first_of_last:
            yield from fn(table.slice(0, first_of_last)).to_batches()
    if carried:
        yield from fn(pa.Table.from_batches(carried)).to_batches()


def clean_events(events: DataFrame, rules: CleanRules) -> DataFrame:
    """Valid events (with ``event_rank``) -> :func:`clean_users` on every user: deduplicated,
    with ``copies`` and a bot ``reject_reason``."""
    schema = T.StructType(
        [*events.schema.fields, T.StructField("copies", T.LongType()), T.StructField("reject_reason", T.StringType())]
    )
    return _sorted_by_user(events).mapInArrow(lambda b: by_whole_users(b, lambda t: clean_users(t, rules)), schema)


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
            ("first_in_session", T.BooleanType()),  # the first step on its item in its session
        ]
    ]
)  # what to_steps returns


STEP_INPUT = ["user_id", "ts", "item_id", "event_rank", "category"]  # what steps_of_users reads

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
    # the arrival order need not travel to Python: Spark sorted by it, and a step is numbered by it
    ordered = _sorted_by_user(events).select(*STEP_INPUT)
    return ordered.mapInArrow(lambda b: by_whole_users(b, lambda t: steps_of_users(t, rules)), STEP_SCHEMA)


# clean_steps' rows: steps (reject_reason null) and the events rejected as a bot's, in one frame
CLEAN_STEP_SCHEMA = T.StructType(
    [
        *STEP_SCHEMA.fields,
        *[T.StructField(name, T.StringType()) for name in ("event_type", "ts_raw", "dt")],  # a reject's
        T.StructField("copies", T.LongType()),  # raw rows behind the row (a step: of all its events)
        T.StructField("reject_reason", T.StringType()),
        T.StructField(CORRUPT, T.StringType()),  # a malformed line's text
    ]
)


def clean_steps(events: DataFrame, clean: CleanRules, rules: StepRules) -> DataFrame:
    """Events (with ``event_rank``) -> :func:`clean_events`, then :func:`to_steps` of the events
    kept, in one sort and one pass: rows of CLEAN_STEP_SCHEMA, the steps (null ``reject_reason``;
    ``copies`` counts the raw rows merged into each), the events rejected as a bot's (their raw
    fields, ``n_events`` 1, the step fields null), and the rows that came with a
    ``reject_reason`` already (validation's), carried through as they are.

    The same as the two transforms one after the other, without sorting the events twice or
    keeping the deduplicated events between them (tests compare the two). Carrying the rejects
    along lets the stage read its raw rows once, without keeping them.
    """
    given = [c for c in ("reject_reason", CORRUPT) if c in events.columns]
    ordered = _sorted_by_user(events).select(*STEP_INPUT, "event_type", "ts_raw", "dt", *given)
    return ordered.mapInArrow(
        lambda b: by_whole_users(b, lambda t: clean_steps_of_users(t, clean, rules)), CLEAN_STEP_SCHEMA
    )


def clean_steps_of_users(table: pa.Table, clean: CleanRules, rules: StepRules) -> pa.Table:
    """:func:`clean_steps` on whole users' rows, the valid ones (null ``reject_reason``, if the
    table has one) sorted by user and ``ORDER`` (pure Arrow + NumPy)."""
    given = [c for c in ("reject_reason", CORRUPT) if c in table.column_names]
    valid = (
        pc.is_null(table.column("reject_reason"))
        if "reject_reason" in given
        else pa.array(np.ones(table.num_rows, bool))
    )
    passed = table.filter(pc.invert(valid))  # rejected before cleaning: through as they are
    cleaned = clean_users(table.filter(valid).drop(given), clean)
    is_kept = pc.is_null(cleaned.column("reject_reason"))
    kept, bots = cleaned.filter(is_kept), cleaned.filter(pc.invert(is_kept))
    steps = steps_of_users(kept.select(STEP_INPUT), rules)
    sizes = np.asarray(steps.column("n_events"))  # [s]: a step is a run of that many kept events
    kept_copies = np.asarray(kept.column("copies"))
    copies = np.add.reduceat(kept_copies, np.cumsum(sizes) - sizes) if len(sizes) else kept_copies[:0]
    steps = steps.append_column("copies", pa.array(copies, pa.int64()))
    one = pa.array(np.ones(bots.num_rows, np.int64))
    bots = bots.append_column("n_events", one)
    one = pa.array(np.ones(passed.num_rows, np.int64))
    passed = passed.append_column("n_events", one).append_column("copies", one)
    return pa.concat_tables([conform(t, CLEAN_STEP_SCHEMA) for t in (steps, bots, passed)])


RAW_TEXT = ["user_id", "item_id", "event_type", "ts_raw", "category", "dt", CORRUPT]  # of ingest.CANONICAL


def clean_raw_steps(raw: DataFrame, checks: validate_arrow.Checks, clean: CleanRules, rules: StepRules) -> DataFrame:
    """Canonical raw rows -> :func:`clean_steps` of them as ``etl.validate`` judges them (rejected
    rows carry their reason; valid ones before ``checks.window_start`` carry ``checks.outside``),
    with the validation and the sort by user and ``ORDER`` done by column in the Python pass
    (``etl.validate_arrow``): the same rows, without Spark's per-row parse and multi-key sort.

    Spark shuffles the raw text by a 64-bit hash of the trimmed user and sorts by that hash alone
    (a radix sort of one long); rows without a user are spread by a hash of the whole row.
    """
    user = trim_text(F.col("user_id"))
    spread = F.xxhash64(*RAW_TEXT, "ingest_order")  # a row without a user: rejected, goes anywhere
    arranged = (
        raw.select(
            *RAW_TEXT,
            F.col("ingest_order.file").alias("file"),
            F.col("ingest_order.block").alias("block"),
            F.col("ingest_order.row").alias("row"),
            F.when(user != "", F.xxhash64(user)).otherwise(spread).alias("h"),
        )
        .repartition("h")
        .sortWithinPartitions("h")
    )

    def run(table: pa.Table) -> pa.Table:
        judged = validate_arrow.judge(table, checks)
        return clean_steps_of_users(validate_arrow.arrival_sorted(judged, table), clean, rules)

    return arranged.mapInArrow(lambda b: by_whole_users(b, run, key="h"), CLEAN_STEP_SCHEMA)


def conform(table: pa.Table, schema: T.StructType) -> pa.Table:
    """``table`` with exactly ``schema``'s columns in its order; a missing one is null."""
    from pyspark.sql.pandas.types import to_arrow_type

    return pa.table(
        {
            f.name: table.column(f.name).cast(to_arrow_type(f.dataType))
            if f.name in table.column_names
            else pa.nulls(table.num_rows, to_arrow_type(f.dataType))
            for f in schema.fields
        }
    )


def _put(values: pa.Array, rows: np.ndarray, new: pa.Array) -> pa.Array:
    """``values`` with ``new[i]`` in place of ``values[rows[i]]``."""
    at = np.arange(len(values))
    at[rows] = len(values) + np.arange(len(rows))
    return pa.concat_arrays([values, new.cast(values.type)]).take(pa.array(at))


def flags_after(values: pa.Array) -> np.ndarray:
    """[n] bool: True where a row differs from the one before it (and at row 0)."""
    out = np.ones(len(values), bool)
    if len(values) > 1:
        out[1:] = np.asarray(pc.fill_null(pc.not_equal(values[1:], values[:-1]), True))
    return out


def steps_of_users(table: pa.Table, rules: StepRules) -> pa.Table:
    """:func:`to_steps` on whole users' events, sorted by user and ``ORDER`` (pure Arrow + NumPy)."""
    if not table.num_rows:  # e.g. a batch of bots only
        return conform(pa.table({}), STEP_SCHEMA)
    col = {name: table.column(name).combine_chunks() for name in table.column_names}  # flat arrays
    n = table.num_rows
    index = np.arange(n)
    new_user = flags_after(col["user_id"])  # [n]
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
        starts_run |= flags_after(col["item_id"])
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
        category = _put(category, merged, smallest.column("category_min").combine_chunks())  # the merged runs' min
    step_user = col["user_id"].take(pa.array(starts))
    step_item = col["item_id"].take(pa.array(starts))
    # a session's distinct items, counted by a sum (Spark aggregates that by hashing, with partial
    # sums before its shuffle, where a set of ids per session would be collected and shipped)
    item_code = np.asarray(pc.dictionary_encode(step_item).indices).astype(np.int64)  # [s]
    session_key = counted[starts]  # [s]: the step's (user, session)
    first_in_session = np.zeros(len(starts), bool)
    first_in_session[np.unique(session_key * (int(item_code.max()) + 1) + item_code, return_index=True)[1]] = True
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
            "item_id": step_item,
            "event_rank": pa.array(np.maximum.reduceat(np.asarray(col["event_rank"]), starts), pa.int32()),
            "category": category,
            "n_events": pa.array(ends - starts + 1, pa.int64()),
            "end_ts": ts.take(pa.array(ends)),
            "step_no": pa.array(step_no, pa.int32()),
            "gap_s": pa.array(step_gap, pa.float64(), from_pandas=True),  # NaN -> null: a user's first step
            "time_gap_bucket": pa.array(bucket, pa.int32()),
            "held_out": pa.array(held_out, pa.bool_()),
            "first_in_session": pa.array(first_in_session, pa.bool_()),
        }
    )


def time_gap_bucket(gap_s: Column, edges_s: list[float]) -> Column:
    """0 = padding, 1 = first step (no previous), 2.. = the gap's bucket by the upper edges."""
    edges = F.array(*[F.lit(float(e)) for e in edges_s])
    below = F.size(F.filter(edges, lambda e: e < gap_s))
    return F.when(gap_s.isNull(), F.lit(1)).otherwise(below + 2).cast("int")


def sessions_table(steps: DataFrame) -> DataFrame:
    """One row per session: bounds, size and duration (for distributions and analysis).

    Read off the steps (merged events keep their count and the last one's time; ``first_in_session``
    marks each item's first step in the session), so the stage never has to keep the per-event
    frame."""
    return (
        steps.groupBy("user_id", "session_idx")
        .agg(
            F.min("ts").alias("start_ts"),
            F.max("end_ts").alias("end_ts"),
            F.sum("n_events").cast("long").alias("n_events"),
            F.sum(F.col("first_in_session").cast("long")).alias("n_items"),
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
