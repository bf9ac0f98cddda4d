"""The sessionize stage: raw logs of a lookback window -> rejects, vocabulary, sessions, sequences.

It wires the pure transforms together, writes every output atomically under the run date's
folder (so re-running a date replaces it exactly), and accounts for every input row:
``rows_in = out_of_window + rejected + duplicates_removed + events_kept``, checked, not assumed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from interest import io, logs, storage
from interest.config import Config, SessionizeConfig
from interest.errors import UserError
from interest.etl import ingest, sequences, sessions, validate, vocab
from interest.layout import Layout, SessionizePaths
from interest.schema import MIN_TRAIN_STEPS, TIME_GAP_EDGES_S
from interest.spark import JobLabels

log = logging.getLogger(__name__)

LENGTH_BUCKETS = [1, 2, 3, 5, 10, 20, 50, 100, 200, 500]


class SessionizeError(UserError, RuntimeError):
    """The stage cannot produce a valid output (no events, broken accounting)."""


def window_bounds(date: str, lookback_days: int) -> tuple[str | None, str]:
    """[start, end] dates of the lookback window ending at ``date`` (start None = unbounded)."""
    end = dt.date.fromisoformat(date)
    if lookback_days <= 0:
        return None, end.isoformat()
    return (end - dt.timedelta(days=lookback_days - 1)).isoformat(), end.isoformat()


@dataclass(frozen=True)
class RawWindow:
    """The canonical raw rows of a run's window, as read."""

    rows: DataFrame
    partitioned: bool  # whether dt partitions did the windowing (else: ``classify`` flags it)
    skipped: list[ingest.CorruptFile]  # source files left out as unreadable
    file_rows: int | None  # what the Parquet footers of the files read say they hold (None: not Parquet)


def read_window(spark: SparkSession, cfg: Config, layout: Layout) -> RawWindow:
    """:func:`read_canonical`, with categories from ``ingest.item_categories`` where it is set."""
    raw = read_canonical(spark, cfg, layout)
    if cfg.ingest.item_categories:
        categories = ingest.read_item_categories(spark, cfg.ingest, cfg.ingest.item_categories)
        raw = dataclasses.replace(raw, rows=ingest.with_item_categories(raw.rows, categories))
    return raw


def read_canonical(spark: SparkSession, cfg: Config, layout: Layout) -> RawWindow:
    """Canonical raw rows of the window, with the source files left out as unreadable
    (``ingest.on_corrupt_file: skip``; with ``fail``, the first one stops the job naming it).

    Parquet files whose schemas differ (a column added, renamed, or retyped on some days, e.g.
    ``ts`` as epoch milliseconds one day and ISO text the next) are read group by group and meet
    in the canonical all-text shape, instead of failing deep inside the Parquet reader.
    """
    source = layout.source
    start, end = window_bounds(layout.date, cfg.sessionize.lookback_days)
    first_stage = cfg.sessionize.event_types[0]  # the event type of a source without one
    if cfg.ingest.format != "parquet":
        raw = ingest.read_source(spark, cfg.ingest, source)
        partitioned = "dt" in raw.columns
        if partitioned:
            raw = ingest.in_partition_window(raw, start, end)
        return RawWindow(
            ingest.to_canonical(ingest.with_ingest_order(raw), cfg.ingest, first_stage), partitioned, [], None
        )
    # Parquet: every file of the window is listed and its footer checked before Spark opens any
    # (Spark's schema inference would otherwise read a broken footer first and fail with a trace)
    files, partitioned = ingest.source_files(source)
    files = ingest.in_window(files, (start, end)) if partitioned else files
    footers, skipped = ingest.parquet_footers(files)
    if skipped and cfg.ingest.on_corrupt_file == "fail":
        bad = skipped[0]
        raise ingest.IngestError(
            f"corrupt source file {bad.path} ({bad.bytes:,} bytes): {bad.error}"
            f"{f' (and {len(skipped) - 1} more)' if len(skipped) > 1 else ''}; set "
            f"ingest.on_corrupt_file: skip to go on without it"
        )
    groups = ingest.schema_groups({path: footer.schema for path, footer in footers.items()})
    file_rows = sum(footer.rows for footer in footers.values())
    if not groups:  # nothing readable in the window: no rows, and the stage says so
        return RawWindow(_no_rows(spark), partitioned, skipped, 0)
    reader = spark.read.options(**cfg.ingest.options)
    if files != [source]:  # a folder: partition columns (dt) are read off the paths below it
        reader = reader.option("basePath", source)
    frames = []
    for group in groups:  # more than one group: the schema drifted between days
        try:
            with ingest.partition_values_as_text(spark):
                files_read = reader.parquet(*group)
            frames.append(ingest.to_canonical(ingest.with_ingest_order(files_read), cfg.ingest, first_stage))
        except ingest.IngestError as exc:  # e.g. a column renamed on some days: say which files
            if len(groups) == 1:
                raise
            raise ingest.IngestError(f"{exc} (in {len(group)} file(s) with another schema, e.g. {group[0]})") from None
    rows = functools.reduce(DataFrame.unionByName, frames)  # the window's files only
    return RawWindow(rows, partitioned, skipped, file_rows)


def _no_rows(spark: SparkSession) -> DataFrame:
    """An empty frame of canonical raw rows."""
    schema = ", ".join(
        f"{c} {'struct<file:string,block:bigint,row:bigint>' if c == ingest.INGEST_ORDER else 'string'}"
        for c in ingest.CANONICAL
    )
    return spark.createDataFrame([], schema)


def classify(raw: DataFrame, cfg: Config, date: str, partitioned: bool) -> DataFrame:
    """Typed rows with ``reject_reason`` and ``outside`` (before the window, when not by partition)."""
    s = cfg.sessionize
    typed = validate.normalize(raw, cfg.ingest.ts_format)
    flagged = validate.with_reject_reason(typed, s.event_types, validate.run_end(date, s.max_future_skew_minutes))
    start, _ = window_bounds(date, s.lookback_days)
    if partitioned or start is None:
        return flagged.withColumn("outside", F.lit(False))
    before = F.col("ts") < F.lit(f"{start} 00:00:00").cast("timestamp")
    return flagged.withColumn("outside", F.col("reject_reason").isNull() & before)


def valid_events(flagged: DataFrame, cfg: Config) -> DataFrame:
    """The rows that passed validation inside the window, with their funnel ``event_rank``."""
    valid = flagged.where(F.col("reject_reason").isNull() & ~F.col("outside")).select(
        "user_id", "item_id", "event_type", "ts", "ts_raw", "category", "dt", "ingest_order"
    )
    return sessions.with_event_rank(valid, cfg.sessionize.event_types)


def clean_rules(s: SessionizeConfig) -> sessions.CleanRules:
    """The cleaning rules of a sessionize config."""
    return sessions.CleanRules(s.bot_max_events_per_day, s.bot_policy)


def kept_events(spark: SparkSession, cfg: Config, layout: Layout) -> DataFrame:
    """The window's events as the stage keeps them (valid, deduplicated, no bot's), before they
    become steps: what a request-time encoding of a user starts from (``serving.recommend``)."""
    raw = read_window(spark, cfg, layout)
    valid = valid_events(classify(raw.rows, cfg, layout.date, raw.partitioned), cfg)
    return sessions.clean_events(valid, clean_rules(cfg.sessionize)).where(F.col("reject_reason").isNull())


def step_rules(s: SessionizeConfig) -> sessions.StepRules:
    """The step rules of a sessionize config."""
    return sessions.StepRules(
        gap_minutes=s.session_gap_minutes,
        max_events=sessions.MAX_SESSION_EVENTS,
        max_minutes=sessions.MAX_SESSION_MINUTES,
        collapse_repeats=True,
        edges_s=TIME_GAP_EDGES_S,
        min_train_steps=MIN_TRAIN_STEPS,
    )


def _quarantine(cleaned: DataFrame) -> DataFrame:
    """All rejected rows in one layout: validation rejects and bot rejects."""
    return validate.rejects_view(cleaned.where(F.col("reject_reason") != OUTSIDE))


def _length_buckets() -> dict[str, Column]:
    """The histogram's buckets of steps per user (``1``, ``2``, ``3-4``, ... ``500+``): label ->
    condition on ``n_steps``."""
    edges = LENGTH_BUCKETS
    steps = F.col("n_steps")
    buckets = {f"{a}-{b - 1}" if b - 1 > a else f"{a}": (steps >= a) & (steps < b) for a, b in zip(edges, edges[1:])}
    return {**buckets, f"{edges[-1]}+": steps >= edges[-1]}


@dataclass(frozen=True)
class Window:
    """The run's lookback window of dates (``start`` None: unbounded)."""

    start: str | None
    end: str


@dataclass(frozen=True)
class SequenceLengths:
    """Steps per user: quantiles and a histogram, against the stored window ``max_len``."""

    max_len: int
    min: int
    p50: float
    p90: float
    p99: float
    max: int
    histogram: dict[str, int]


@dataclass(frozen=True)
class SessionizeSummary:
    """What the stage did for one date, with every input row accounted for:
    ``rows_in = out_of_window + rejected_total + duplicates_removed + events_kept``."""

    date: str
    window: Window
    rows_in: int
    skipped_files: tuple[ingest.CorruptFile, ...]  # unreadable source files left out; not in rows_in
    out_of_window: int
    rejected: dict[str, int]  # reason -> rows
    rejected_total: int
    duplicates_removed: int
    events_kept: int
    accounted: bool
    steps: int
    repeats_merged: int
    users: int
    train_users: int
    train_rows: int
    cold_users: int
    sessions: int
    items_seen: int
    vocab_size: int  # embedding rows: padding + unknown + items
    unknown_steps: int
    sequence_length: SequenceLengths
    outputs: SessionizePaths
    wall_s: float
    step_seconds: dict[str, float]  # the stage's profile: each labelled step's wall time

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Intake:
    """The window's rows read, validated, deduplicated, cleaned of bots and made steps (one
    frame: ``sessions.clean_steps``), and their tallies."""

    cleaned: DataFrame  # persisted: the steps and every rejected or out-of-window row
    rows_in: int
    outside: int
    rejected: dict[str, int]  # validation and bot rejects together
    duplicates: int
    events_kept: int
    skipped: tuple[ingest.CorruptFile, ...]


@dataclass(frozen=True)
class _Built:
    """The stage's frames after cleaning: steps, vocabulary, windows and inference rows."""

    steps: DataFrame  # of the cleaned rows
    counts: DataFrame  # persisted: per item seen, its training steps, category and all steps
    items: DataFrame  # persisted vocabulary
    windows: DataFrame  # persisted
    seqs: DataFrame  # one inference row per user
    train_rows: int


def run_sessionize(spark: SparkSession, cfg: Config, date: str, base_vocab: str | None = None) -> SessionizeSummary:
    """Run the stage for ``date``; returns the summary (also written as JSON next to the outputs).

    ``base_vocab``: a previous vocabulary whose item indices must be kept (nightly warm start).
    """
    with logs.stage("sessionize", date):
        started = time.perf_counter()
        label = JobLabels(spark, "sessionize", date)
        label("read, validate, clean, steps")
        layout = Layout.of(cfg, date)
        intake = _read_and_clean(spark, cfg, layout)
        try:
            label("vocabulary and sequences")
            built = _build(spark, cfg, intake, base_vocab)
        except BaseException:
            intake.cleaned.unpersist()
            label.clear()
            raise
        try:
            label("statistics")
            stats = _statistics(built, MIN_TRAIN_STEPS)
            _check_accounting(intake, int(stats["events"]))
            paths = layout.sessionized
            _write_outputs(spark, cfg, date, paths, intake, built, int(stats["users"]), label)
            label.clear()  # the step timings end here; the summary carries them
            summary = _summarise(cfg, date, paths, intake, built, stats, time.perf_counter() - started, label.seconds)
            storage.write_text(
                paths.summary, json.dumps(summary.to_dict(), indent=2, sort_keys=True, default=str) + "\n"
            )
        finally:
            for frame in (built.windows, built.items, built.counts, intake.cleaned):
                frame.unpersist()
            label.clear()
        log.info(
            f"{summary.rows_in:,} rows in, {summary.events_kept:,} events kept, {summary.users:,} users "
            f"({summary.train_users:,} trainable), vocabulary {summary.vocab_size:,}, {summary.wall_s} s"
        )
        return summary


# how the stage keeps its frames: in memory as column batches, spilling to disk when short. Not
# PySpark's MEMORY_AND_DISK, which also serializes the batches, paid again on every read
KEEP = StorageLevel.MEMORY_AND_DISK_DESER
OUTSIDE = "outside_window"  # the mark of a row before the window (counted, not quarantined)


def clean(raw: DataFrame, cfg: Config, date: str, partitioned: bool) -> DataFrame:
    """Canonical raw rows -> the steps of the valid ones and every other row with its reason
    (``sessions.clean_steps``; rows before the window marked ``OUTSIDE``)."""
    s = cfg.sessionize
    flagged = classify(raw, cfg, date, partitioned)
    marked = flagged.withColumn(
        "reject_reason", F.when(F.col("outside"), F.lit(OUTSIDE)).otherwise(F.col("reject_reason"))
    ).drop("outside")
    # one shuffle by user for the whole stage: deduplication, bots, sessions and steps all work
    # user by user, and the rejects ride along so that the raw rows are read once
    events = sessions.with_event_rank(marked, s.event_types)
    return sessions.clean_steps(events, clean_rules(s), step_rules(s))


def steps_of(cleaned: DataFrame) -> DataFrame:
    """The steps among :func:`clean`'s rows."""
    return cleaned.where(F.col("reject_reason").isNull()).select(*sessions.STEP_SCHEMA.names)


def windows_of(steps: DataFrame, items: DataFrame, s: SessionizeConfig) -> DataFrame:
    """Steps of :func:`steps_of` and a vocabulary -> the stored windows (``etl.sequences``)."""
    # the steps of each user are in one partition (clean_steps made them so; the broadcast join
    # of the vocabulary moves no row), so the sequences need no shuffle
    return sequences.build_sequences(
        vocab.apply_vocab(steps, items), s.max_len, MIN_TRAIN_STEPS, s.max_windows, by_user=True
    )


def _read_and_clean(spark: SparkSession, cfg: Config, layout: Layout) -> _Intake:
    """Read the window, flag every row, and clean the valid ones into steps, in one pass over
    the raw rows (nothing of them is kept but what ``sessions.clean_steps`` returns); stops with
    a clear error when the window is empty or every event was rejected."""
    date, s = layout.date, cfg.sessionize
    raw = read_window(spark, cfg, layout)
    cleaned = clean(raw.rows, cfg, date, raw.partitioned).persist(KEEP)
    tallies = (
        cleaned.groupBy("reject_reason")
        .agg(F.sum("n_events").alias("events"), F.sum("copies").alias("copies"))
        .collect()
    )  # a step counts its events and the raw rows behind them; any other row is one of each
    rows_in = sum(int(r["copies"]) for r in tallies)
    by_reason = {r["reject_reason"]: int(r["events"]) for r in tallies}
    rejected = {reason: n for reason, n in by_reason.items() if reason not in (None, OUTSIDE)}
    events_kept = by_reason.get(None, 0)
    try:
        if raw.file_rows is not None and rows_in != raw.file_rows:
            raise SessionizeError(
                f"row accounting failed: the source files hold {raw.file_rows:,} rows, the stage read {rows_in:,}"
            )
        if rows_in == 0:
            start, end = window_bounds(date, s.lookback_days)
            raise SessionizeError(f"no raw events in the window {start or 'beginning'} .. {end} under {layout.source}")
        if events_kept == 0:
            raise SessionizeError(f"every event of the window ending {date} was rejected: {rejected}")
    except SessionizeError:
        cleaned.unpersist()
        raise
    return _Intake(
        cleaned,
        rows_in,
        outside=by_reason.get(OUTSIDE, 0),
        rejected=rejected,
        duplicates=rows_in - sum(by_reason.values()),
        events_kept=events_kept,
        skipped=tuple(raw.skipped),
    )


def _build(spark: SparkSession, cfg: Config, intake: _Intake, base_vocab: str | None) -> _Built:
    """The vocabulary and the stored windows of the steps."""
    s = cfg.sessionize
    steps = steps_of(intake.cleaned)
    previous = spark.read.parquet(base_vocab) if base_vocab else None
    # counted on training steps only: held-out targets must not shape the vocabulary or the counts;
    # every step counted once more for the statistics (items seen, steps on unknown items)
    counts = vocab.item_counts(steps, counted=~F.col("held_out")).persist(KEEP)
    items = vocab.vocab_of_counts(counts, s.min_item_count, previous).persist(KEEP)
    windows = windows_of(steps, items, s).persist(KEEP)
    return _Built(
        steps=steps,
        counts=counts,
        items=items,
        windows=windows,
        seqs=sequences.inference_rows(windows),
        train_rows=int(sequences.training_rows(windows, MIN_TRAIN_STEPS).count()),
    )


def _statistics(built: _Built, min_train_steps: int) -> dict[str, Any]:
    """Per-user counts, length quantiles and histogram of the inference rows, and the vocabulary's
    reach, in two small jobs (there were six, each paying a job's start-up)."""
    buckets = _length_buckets()
    stats = built.seqs.agg(
        F.count(F.lit(1)).alias("users"),
        F.sum("n_steps").alias("steps"),
        F.sum("n_events").alias("events"),
        F.sum("n_sessions").alias("sessions"),
        F.sum(F.when(F.col("n_steps") >= min_train_steps, 1).otherwise(0)).alias("train_users"),
        F.expr("percentile(n_steps, array(0.5, 0.9, 0.99))").alias("q"),
        F.min("n_steps").alias("min"),
        F.max("n_steps").alias("max"),
        *[F.count(F.when(inside, 1)).alias(f"bucket{i}") for i, inside in enumerate(buckets.values())],
    ).collect()[0]
    # items seen (counted), steps on items outside the vocabulary, and the top index (of an item
    # counted or kept from a previous vocabulary)
    reach = (
        built.counts.select("item_id", "steps")
        .join(built.items.select("item_id", "item_idx"), "item_id", "full")
        .agg(
            F.count("steps").alias("seen"),
            F.sum(F.when(F.col("item_idx").isNull(), F.col("steps")).otherwise(0)).alias("unknown"),
            F.max("item_idx").alias("top_idx"),
        )
        .collect()[0]
    )
    return {
        **{k: v for k, v in stats.asDict().items() if not k.startswith("bucket")},
        "seen": reach["seen"],
        "unknown": reach["unknown"],
        "top_idx": reach["top_idx"] if reach["top_idx"] is not None else vocab.FIRST_ITEM - 1,
        "histogram": {label: int(stats[f"bucket{i}"]) for i, label in enumerate(buckets)},
    }


def _check_accounting(intake: _Intake, events_in_sequences: int) -> None:
    """Every input row is out of the window, rejected, a duplicate or kept, and every kept event
    is in a sequence: checked, not assumed (the rows read against the Parquet footers, too)."""
    total_rejected = sum(intake.rejected.values())
    if (
        intake.rows_in != intake.outside + total_rejected + intake.duplicates + intake.events_kept
        or events_in_sequences != intake.events_kept
    ):
        raise SessionizeError(
            f"row accounting failed: in={intake.rows_in} outside={intake.outside} rejected={total_rejected} "
            f"duplicates={intake.duplicates} kept={intake.events_kept} in_sequences={events_in_sequences}"
        )


def _write_outputs(
    spark: SparkSession,
    cfg: Config,
    date: str,
    paths: SessionizePaths,
    intake: _Intake,
    built: _Built,
    n_users: int,
    label: JobLabels,
) -> None:
    """Each output replaced atomically: rejects, vocabulary, sessions, the day's steps,
    sequences."""
    s = cfg.sessionize
    label("write rejects")
    io.replace_atomically(
        spark, paths.rejects, lambda p: _quarantine(intake.cleaned).write.mode("overwrite").parquet(p)
    )
    label("write vocabulary")
    io.replace_atomically(
        spark,
        paths.vocab,
        lambda p: built.items.coalesce(1).sortWithinPartitions("item_idx").write.mode("overwrite").parquet(p),
    )
    label("write sessions")
    io.replace_atomically(
        spark, paths.sessions, lambda p: sessions.sessions_table(built.steps).write.mode("overwrite").parquet(p)
    )
    label("write the day's steps")
    io.replace_atomically(
        spark,
        paths.day,
        lambda p: (
            sessions.day_items(built.steps, date, cfg.sessionize.max_future_skew_minutes)
            .write.mode("overwrite")
            .parquet(p)
        ),
    )
    label("write sequences")
    io.replace_atomically(
        spark,
        paths.infer,
        lambda p: io.write_parquet_groups(built.seqs, p, n_users, s.rows_per_row_group, s.min_row_groups, "user_id"),
    )
    io.replace_atomically(
        spark,
        paths.train,
        lambda p: io.write_parquet_groups(
            sequences.training_rows(built.windows, MIN_TRAIN_STEPS),
            p,
            built.train_rows,
            s.rows_per_row_group,
            s.min_row_groups,
            "user_id",
        ),
    )


def _summarise(
    cfg: Config,
    date: str,
    paths: SessionizePaths,
    intake: _Intake,
    built: _Built,
    stats: dict[str, Any],
    seconds: float,
    step_seconds: dict[str, float],
) -> SessionizeSummary:
    q = stats["q"] or [0, 0, 0]
    n_users, n_train = int(stats["users"]), int(stats["train_users"])
    return SessionizeSummary(
        date=date,
        window=Window(*window_bounds(date, cfg.sessionize.lookback_days)),
        rows_in=intake.rows_in,
        skipped_files=intake.skipped,
        out_of_window=intake.outside,
        rejected=dict(sorted(intake.rejected.items())),
        rejected_total=sum(intake.rejected.values()),
        duplicates_removed=intake.duplicates,
        events_kept=intake.events_kept,
        accounted=True,  # _check_accounting raised otherwise
        steps=int(stats["steps"]),
        repeats_merged=intake.events_kept - int(stats["steps"]),
        users=n_users,
        train_users=n_train,
        train_rows=built.train_rows,
        cold_users=n_users - n_train,
        sessions=int(stats["sessions"]),
        items_seen=int(stats["seen"]),
        vocab_size=int(stats["top_idx"]) + 1,
        unknown_steps=int(stats["unknown"] or 0),
        sequence_length=SequenceLengths(
            max_len=cfg.sessionize.max_len,
            min=int(stats["min"]),
            p50=float(q[0]),
            p90=float(q[1]),
            p99=float(q[2]),
            max=int(stats["max"]),
            histogram=stats["histogram"],
        ),
        outputs=paths,
        wall_s=round(seconds, 2),
        step_seconds={step: round(s, 2) for step, s in step_seconds.items()},
    )


def format_summary(summary: SessionizeSummary) -> str:
    """The summary as the table the job prints."""
    sm, sl = summary, summary.sequence_length
    lines = [
        f"sessionize {sm.date}  window {sm.window.start or '…'} .. {sm.window.end}  ({sm.wall_s} s)",
        f"  rows in              {sm.rows_in:>12,}",
        *[f"  skipped file         {f.path} ({f.bytes:,} bytes): {f.error}" for f in sm.skipped_files],
        f"  out of window        {sm.out_of_window:>12,}",
        f"  rejected             {sm.rejected_total:>12,}",
        *[f"    {reason:<18} {n:>12,}" for reason, n in sm.rejected.items()],
        f"  duplicates removed   {sm.duplicates_removed:>12,}",
        f"  events kept          {sm.events_kept:>12,}   (all rows accounted for: {sm.accounted})",
        f"  steps (merged)       {sm.steps:>12,}   ({sm.repeats_merged:,} funnel repeats merged)",
        f"  users                {sm.users:>12,}   ({sm.train_users:,} trainable in {sm.train_rows:,} training "
        f"rows, {sm.cold_users:,} too short to train on)",
        f"  sessions             {sm.sessions:>12,}",
        f"  items seen / vocab   {sm.items_seen:>12,} / {sm.vocab_size:,} (unknown steps {sm.unknown_steps:,})",
        f"  steps per user       min {sl.min}  p50 {sl.p50:g}  p90 {sl.p90:g}  p99 {sl.p99:g}  max {sl.max}  "
        f"(window keeps {sl.max_len})",
        "  histogram            " + "  ".join(f"{k}:{v}" for k, v in sl.histogram.items()),
        "  seconds by step      " + "  ".join(f"{k}:{v:g}" for k, v in sm.step_seconds.items()),
    ]
    lines += [f"  {name:<20} {path}" for name, path in dataclasses.asdict(sm.outputs).items()]
    return "\n".join(lines)
