"""The raw rows of a run's lookback window, read once in the canonical all-text shape.

Reading is where a log's formats, drifting schemas and corrupt files are met, so it lives apart
from the rules that make steps of the rows (``etl.sessionize``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession

from interest.config import Config
from interest.etl import ingest
from interest.layout import Layout


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
