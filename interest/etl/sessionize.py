"""The sessionize stage: raw logs of a lookback window -> rejects, vocabulary, sessions, sequences.

It wires the pure transforms together, writes every output atomically under the run date's
folder (so re-running a date replaces it exactly), and accounts for every input row:
``rows_in = out_of_window + rejected + duplicates_removed + events_kept``, checked, not assumed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from interest import io, logs, storage
from interest.config import Config, SessionizeConfig
from interest.errors import UserError
from interest.etl import ingest, sequences, sessions, summary, validate, validate_arrow, vocab
from interest.etl.lookback import read_window, window_bounds
from interest.etl.summary import SequenceLengths, SessionizeSummary, Window
from interest.layout import Layout, SessionizePaths
from interest.schema import MIN_TRAIN_STEPS, TIME_GAP_EDGES_S
from interest.spark import JobLabels

log = logging.getLogger(__name__)


class SessionizeError(UserError, RuntimeError):
    """The stage cannot produce a valid output (no events, broken accounting)."""


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
TIME_ZONE = "spark.sql.session.timeZone"


def clean(raw: DataFrame, cfg: Config, date: str, partitioned: bool, by_column: bool | None = None) -> DataFrame:
    """Canonical raw rows -> the steps of the valid ones and every other row with its reason
    (``sessions.clean_steps``; rows before the window marked ``OUTSIDE``).

    ``by_column``: validate and sort in the Python pass (``sessions.clean_raw_steps``), not in
    Spark; None: wherever the rows' grammar reads the format (``validate_arrow.applies``). The
    rows are the same either way (tested)."""
    s = cfg.sessionize
    if by_column is None:
        by_column = validate_arrow.applies(cfg.ingest.ts_format, raw.sparkSession.conf.get(TIME_ZONE) or "")
    if by_column:
        start, _ = window_bounds(date, s.lookback_days)
        checks = validate_arrow.Checks(
            event_types=tuple(s.event_types),
            ts_format=cfg.ingest.ts_format,
            latest=validate.run_end(date, s.max_future_skew_minutes),
            window_start=None if partitioned else start,
            outside=OUTSIDE,
        )
        return sessions.clean_raw_steps(raw, checks, clean_rules(s), step_rules(s))
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
    buckets = summary.length_buckets()
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
