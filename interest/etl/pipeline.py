"""The sessionize stage: raw logs of a lookback window -> rejects, vocabulary, sessions, sequences.

It wires the pure transforms together, writes every output atomically under the run date's
folder (so re-running a date replaces it exactly), and accounts for every input row:
``rows_in = out_of_window + rejected + duplicates_removed + events_kept``, checked, not assumed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from interest import io, storage
from interest.config import Config
from interest.data.files import SessionizePaths
from interest.errors import UserError
from interest.etl import ingest, sequences, sessions, validate, vocab
from interest.spark import JobLabels

LENGTH_BUCKETS = [1, 2, 3, 5, 10, 20, 50, 100, 200, 500]


class SessionizeError(UserError, RuntimeError):
    """The stage cannot produce a valid output (no events, broken accounting)."""


def window_bounds(date: str, lookback_days: int) -> tuple[str | None, str]:
    """[start, end] dates of the lookback window ending at ``date`` (start None = unbounded)."""
    end = dt.date.fromisoformat(date)
    if lookback_days <= 0:
        return None, end.isoformat()
    return (end - dt.timedelta(days=lookback_days - 1)).isoformat(), end.isoformat()


def read_window(spark: SparkSession, cfg: Config, date: str) -> tuple[DataFrame, bool, list[ingest.CorruptFile]]:
    """Canonical raw rows of the window; whether ``dt`` partitions did the windowing; and the
    source files left out as unreadable (``ingest.on_corrupt_file: skip``; with ``fail``, the
    first one stops the job naming it)."""
    source = cfg.ingest.path or cfg.paths.resolve("raw_events")
    raw = ingest.read_source(spark, cfg.ingest, source)
    partitioned = "dt" in raw.columns
    start, end = window_bounds(date, cfg.sessionize.lookback_days)
    skipped: list[ingest.CorruptFile] = []
    if cfg.ingest.format == "parquet":
        files = ingest.source_files(raw, (start, end) if partitioned else None)
        skipped = ingest.corrupt_parquet_files(files)
        if skipped and cfg.ingest.on_corrupt_file == "fail":
            bad = skipped[0]
            raise ingest.IngestError(
                f"corrupt source file {bad.path} ({bad.bytes:,} bytes): {bad.error}"
                f"{f' (and {len(skipped) - 1} more)' if len(skipped) > 1 else ''}; set "
                f"ingest.on_corrupt_file: skip to go on without it"
            )
        if skipped:
            broken = {c.path for c in skipped}
            raw = (
                spark.read.options(**cfg.ingest.options)
                .option("basePath", source)
                .parquet(*[f for f in files if f not in broken])
            )
    if partitioned:  # before ingest_order, so that partition pruning still reaches the scan
        raw = ingest.in_partition_window(raw, start, end)
    return ingest.to_canonical(ingest.with_ingest_order(raw), cfg.ingest), partitioned, skipped


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


def clean_events(flagged: DataFrame, cfg: Config) -> DataFrame:
    """Valid rows -> deduplicated events with ``copies``, ``event_rank`` and a bot ``reject_reason``."""
    s = cfg.sessionize
    valid = flagged.where(F.col("reject_reason").isNull() & ~F.col("outside")).select(
        "user_id", "item_id", "event_type", "ts", "ts_raw", "category", "dt", "ingest_order"
    )
    deduped = sessions.with_event_rank(sessions.dedupe(valid), s.event_types)
    return sessions.flag_bots(deduped, s.bot_max_events_per_day, s.bot_policy)


def _quarantine(flagged: DataFrame, cleaned: DataFrame) -> DataFrame:
    """All rejected rows in one layout: validation rejects and bot rejects."""
    return validate.rejects_view(flagged).unionByName(validate.rejects_view(cleaned))


def _length_histogram(seqs: DataFrame) -> dict[str, int]:
    edges = LENGTH_BUCKETS
    labels = [f"{a}-{b - 1}" if b - 1 > a else f"{a}" for a, b in zip(edges, edges[1:])]
    labels.append(f"{edges[-1]}+")
    bucket = F.lit(labels[-1])
    for (a, b), label in reversed(list(zip(zip(edges, edges[1:]), labels))):
        bucket = F.when((F.col("n_steps") >= a) & (F.col("n_steps") < b), F.lit(label)).otherwise(bucket)
    rows = {r["b"]: r["count"] for r in seqs.groupBy(bucket.alias("b")).count().collect()}
    return {label: int(rows.get(label, 0)) for label in labels}


def run_sessionize(spark: SparkSession, cfg: Config, date: str, base_vocab: str | None = None) -> dict[str, Any]:
    """Run the stage for ``date``; returns the summary (also written as JSON next to the outputs).

    ``base_vocab``: a previous vocabulary whose item indices must be kept (nightly warm start).
    """
    started = time.perf_counter()
    s = cfg.sessionize
    paths = SessionizePaths.for_date(cfg, date)
    keep = StorageLevel.MEMORY_AND_DISK
    label = JobLabels(spark, "sessionize", date)
    label("read and validate")
    raw, partitioned, skipped = read_window(spark, cfg, date)
    flagged = classify(raw, cfg, date, partitioned).persist(keep)
    by_reason = flagged.groupBy("reject_reason", "outside").count().collect()
    rows_in = sum(r["count"] for r in by_reason)
    if rows_in == 0:
        start, end = window_bounds(date, s.lookback_days)
        raise SessionizeError(
            f"no raw events in the window {start or 'beginning'} .. {end} under "
            f"{cfg.ingest.path or cfg.paths.resolve('raw_events')}"
        )
    rejected = {r["reject_reason"]: r["count"] for r in by_reason if r["reject_reason"]}
    outside = sum(r["count"] for r in by_reason if r["outside"])

    label("deduplicate and exclude bots")
    cleaned = clean_events(flagged, cfg).persist(keep)
    tallies = (
        cleaned.groupBy("reject_reason").agg(F.count(F.lit(1)).alias("rows"), F.sum("copies").alias("copies")).collect()
    )
    duplicates = sum(int(r["copies"]) - int(r["rows"]) for r in tallies)
    for r in tallies:
        if r["reject_reason"]:
            rejected[r["reject_reason"]] = rejected.get(r["reject_reason"], 0) + int(r["rows"])

    label("sessions")
    events = sessions.sessionize(
        cleaned.where(F.col("reject_reason").isNull()).drop("reject_reason", "copies"),
        s.session_gap_minutes,
        s.max_session_events,
        s.max_session_minutes,
    ).persist(keep)
    events_kept = events.count()
    if events_kept == 0:
        raise SessionizeError(f"every event of the window ending {date} was rejected: {rejected}")
    steps = sequences.mark_held_out(
        sessions.with_step_gaps(sessions.to_steps(events, s.collapse_repeats), s.time_gap_edges_s), s.min_train_steps
    )
    label("vocabulary and sequences")
    previous = spark.read.parquet(base_vocab) if base_vocab else None
    # counted on training steps only: held-out targets must not shape the vocabulary or the counts
    items = vocab.build_vocab(steps.where(~F.col("held_out")), s.min_item_count, previous).persist(keep)
    windows = sequences.build_sequences(
        vocab.apply_vocab(steps, items), s.max_len, s.min_train_steps, s.max_windows
    ).persist(keep)
    seqs = sequences.inference_rows(windows)
    train_rows = int(sequences.training_rows(windows, s.min_train_steps).count())

    stats = seqs.agg(
        F.count(F.lit(1)).alias("users"),
        F.sum("n_steps").alias("steps"),
        F.sum("n_events").alias("events"),
        F.sum("n_sessions").alias("sessions"),
        F.sum(F.when(F.col("n_steps") >= s.min_train_steps, 1).otherwise(0)).alias("train_users"),
        F.expr("percentile(n_steps, array(0.5, 0.9, 0.99))").alias("q"),
        F.min("n_steps").alias("min"),
        F.max("n_steps").alias("max"),
    ).collect()[0]
    item_stats = (
        vocab.apply_vocab(steps, items)
        .agg(
            F.countDistinct("item_id").alias("seen"),
            F.sum(F.when(F.col("item_idx") == vocab.UNKNOWN, 1).otherwise(0)).alias("unknown"),
        )
        .collect()[0]
    )
    top_idx = items.agg(F.max("item_idx")).collect()[0][0] or vocab.FIRST_ITEM - 1
    total_rejected = sum(rejected.values())
    accounted = rows_in == outside + total_rejected + duplicates + events_kept
    if not accounted or int(stats["events"]) != events_kept:
        raise SessionizeError(
            f"row accounting failed: in={rows_in} outside={outside} rejected={total_rejected} "
            f"duplicates={duplicates} kept={events_kept} in_sequences={stats['events']}"
        )

    label("write rejects")
    io.replace_atomically(
        spark, paths.rejects, lambda p: _quarantine(flagged, cleaned).write.mode("overwrite").parquet(p)
    )
    label("write vocabulary")
    io.replace_atomically(
        spark,
        paths.vocab,
        lambda p: items.coalesce(1).sortWithinPartitions("item_idx").write.mode("overwrite").parquet(p),
    )
    if s.write_sessions:
        label("write sessions")
        io.replace_atomically(
            spark, paths.sessions, lambda p: sessions.sessions_table(events).write.mode("overwrite").parquet(p)
        )
    n_users, n_train = int(stats["users"]), int(stats["train_users"])
    label("write sequences")
    io.replace_atomically(
        spark,
        paths.infer,
        lambda p: io.write_parquet_groups(seqs, p, n_users, s.rows_per_row_group, s.min_row_groups, "user_id"),
    )
    io.replace_atomically(
        spark,
        paths.train,
        lambda p: io.write_parquet_groups(
            sequences.training_rows(windows, s.min_train_steps),
            p,
            train_rows,
            s.rows_per_row_group,
            s.min_row_groups,
            "user_id",
        ),
    )

    label("summary")
    q = stats["q"] or [0, 0, 0]
    window_start, window_end = window_bounds(date, s.lookback_days)
    summary: dict[str, Any] = {
        "date": date,
        "window": {"start": window_start, "end": window_end},
        "rows_in": rows_in,
        # source files left out as unreadable (ingest.on_corrupt_file: skip): their rows are not in rows_in
        "skipped_files": [dataclasses.asdict(c) for c in skipped],
        "out_of_window": outside,
        "rejected": dict(sorted(rejected.items())),
        "rejected_total": total_rejected,
        "duplicates_removed": duplicates,
        "events_kept": events_kept,
        "accounted": accounted,
        "steps": int(stats["steps"]),
        "repeats_merged": events_kept - int(stats["steps"]),
        "users": n_users,
        "train_users": n_train,
        "train_rows": train_rows,
        "cold_users": n_users - n_train,
        "sessions": int(stats["sessions"]),
        "items_seen": int(item_stats["seen"]),
        "vocab_size": int(top_idx) + 1,  # embedding rows: padding + unknown + items
        "unknown_steps": int(item_stats["unknown"] or 0),
        "sequence_length": {
            "max_len": s.max_len,
            "min": int(stats["min"]),
            "p50": float(q[0]),
            "p90": float(q[1]),
            "p99": float(q[2]),
            "max": int(stats["max"]),
            "histogram": _length_histogram(seqs),
        },
        "outputs": {k: getattr(paths, k) for k in ("train", "infer", "vocab", "rejects", "sessions")},
        "wall_s": round(time.perf_counter() - started, 2),
    }
    storage.write_text(paths.summary, json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    for frame in (windows, items, events, cleaned, flagged):
        frame.unpersist()
    label.clear()
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as the table the job prints."""
    lines = [
        f"sessionize {summary['date']}  window {summary['window']['start'] or '…'} .. "
        f"{summary['window']['end']}  ({summary['wall_s']} s)",
        f"  rows in              {summary['rows_in']:>12,}",
        *[f"  skipped file         {f['path']} ({f['bytes']:,} bytes): {f['error']}" for f in summary["skipped_files"]],
        f"  out of window        {summary['out_of_window']:>12,}",
        f"  rejected             {summary['rejected_total']:>12,}",
    ]
    lines += [f"    {reason:<18} {n:>12,}" for reason, n in summary["rejected"].items()]
    lines += [
        f"  duplicates removed   {summary['duplicates_removed']:>12,}",
        f"  events kept          {summary['events_kept']:>12,}   (all rows accounted for: {summary['accounted']})",
        f"  steps (merged)       {summary['steps']:>12,}   ({summary['repeats_merged']:,} funnel repeats merged)",
        f"  users                {summary['users']:>12,}   "
        f"({summary['train_users']:,} trainable in {summary['train_rows']:,} training rows, "
        f"{summary['cold_users']:,} too short to train on)",
        f"  sessions             {summary['sessions']:>12,}",
        f"  items seen / vocab   {summary['items_seen']:>12,} / {summary['vocab_size']:,} "
        f"(unknown steps {summary['unknown_steps']:,})",
    ]
    sl = summary["sequence_length"]
    lines.append(
        f"  steps per user       min {sl['min']}  p50 {sl['p50']:g}  p90 {sl['p90']:g}  "
        f"p99 {sl['p99']:g}  max {sl['max']}  (window keeps {sl['max_len']})"
    )
    lines.append("  histogram            " + "  ".join(f"{k}:{v}" for k, v in sl["histogram"].items()))
    lines += [f"  {name:<20} {path}" for name, path in summary["outputs"].items()]
    return "\n".join(lines)
