"""Backfills: the nightly refresh over a range of dates, in date order, resumable."""

from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import SparkSession

from interest import storage
from interest.config import Config
from interest.errors import UserError
from interest.layout import Layout, partition
from interest.nightly.refresh import run_nightly
from interest.nightly.report import NightlyReport, report_path

log = logging.getLogger(__name__)


class BackfillError(UserError, ValueError):
    """A backfill range cannot run as asked (bad range, raw partitions missing)."""


def dates_between(start: str, end: str) -> list[str]:
    """Every date from ``start`` to ``end``, inclusive, in order."""
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    if last < first:
        raise BackfillError(f"backfill range is empty: --from {start} is after --to {end}")
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def missing_raw_partitions(source: str, dates: list[str]) -> list[str]:
    """Dates without a ``dt=`` folder in a date-partitioned raw source (none for other sources)."""
    present = storage.list_dirs(source)
    if not any(name.startswith("dt=") for name in present):
        return []  # not partitioned by date: the window is cut by event time instead
    return [d for d in dates if partition(d) not in present]


def run_backfill(spark: SparkSession, cfg: Config, start: str, end: str, redo: bool = False) -> list[NightlyReport]:
    """Run the refresh for every date of [start, end] in date order, skipping dates already done
    (so a stopped backfill resumes where it stopped); ``redo`` runs them all again. Each date
    builds on the newest model before it, so the result does not depend on the order of runs."""
    dates = dates_between(start, end)
    layout = Layout.of(cfg, start)
    missing = missing_raw_partitions(layout.source, dates)
    if missing:
        raise BackfillError(
            f"backfill {start} .. {end}: no raw partition for {', '.join(missing)} under "
            f"{layout.source}; nothing was run"
        )
    reports = []
    for n, date in enumerate(dates, 1):
        if not redo and storage.is_file(report_path(layout.at(date))):
            log.info(f"{date} ({n}/{len(dates)}): already done, skipped")
            continue
        log.info(f"{date} ({n}/{len(dates)})")
        reports.append(run_nightly(spark, cfg, date))
    return reports
