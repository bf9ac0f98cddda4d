"""The nightly refresh for one date: sessionize -> train (or reuse) -> embed -> gates -> publish
-> quality; backfills over a range of dates; the night's report.

- ``refresh``: one date, idempotent, under the date's lock (the wiring of the stages);
- ``backfill``: a range of dates in date order, resuming where a stopped one stopped;
- ``report``: the typed record of a night, its Markdown report and pictures, its MLflow run.
"""

from interest.locks import RunDateError, check_run_date
from interest.nightly.backfill import BackfillError, dates_between, missing_raw_partitions, run_backfill
from interest.nightly.refresh import QualityAlertError, model_for_date, run_nightly
from interest.nightly.report import ModelUsed, NightlyReport, report_path, write_report

__all__ = [
    "BackfillError",
    "ModelUsed",
    "NightlyReport",
    "QualityAlertError",
    "RunDateError",
    "check_run_date",
    "dates_between",
    "missing_raw_partitions",
    "model_for_date",
    "report_path",
    "run_backfill",
    "run_nightly",
    "write_report",
]
