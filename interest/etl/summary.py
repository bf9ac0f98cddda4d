"""What the sessionize stage did for a date: the summary it writes as JSON and prints."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column
from pyspark.sql import functions as F

from interest.etl import ingest
from interest.layout import SessionizePaths

LENGTH_BUCKETS = [1, 2, 3, 5, 10, 20, 50, 100, 200, 500]


def length_buckets() -> dict[str, Column]:
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
