"""The nightly refresh for one date: sessionize -> train (or reuse) -> embed -> gates -> publish.

Idempotent per date: the sessionize outputs of D are replaced exactly; a model already trained on
D's data is reused instead of retrained (so a second run computes the same embeddings); each
table's dt=D partition is swapped in whole. The vocabulary grows from the previous model's, so
item indices keep their meaning and a warm-started model keeps its items' vectors.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global backend state, fine headless and in notebooks
from pyspark.sql import SparkSession

from interest import logs, storage
from interest.config import Config
from interest.errors import UserError
from interest.etl.pipeline import SessionizeSummary, run_sessionize
from interest.locks import date_lock
from interest.models.export import ModelNotFoundError, find_model_before, find_model_for_date
from interest.serving.pipeline import EmbedResult, drift, run_embed
from interest.serving.publish import check_metastore
from interest.training.launch import train_model

log = logging.getLogger(__name__)


def previous_model(cfg: Config, date: str) -> str | None:
    """The newest model trained on data before ``date`` (a backfill never builds on the future)."""
    return find_model_before(cfg.paths.resolve("models"), cfg.model.encoder, date)


def model_for_date(
    spark: SparkSession, cfg: Config, date: str, previous: str | None, force_retrain: bool
) -> tuple[str, str]:
    """(model folder, what was done): reuse D's model, train one, or reuse the previous one."""
    existing = find_model_for_date(cfg.paths.resolve("models"), cfg.model.encoder, date)
    if existing and not force_retrain:
        return existing, f"reused the model already trained on {date}"
    if not cfg.nightly.retrain:
        if previous is None:
            raise ModelNotFoundError(
                "nightly.retrain is false but there is no model to reuse: "
                "train one first (jobs/train.py) or set nightly.retrain=true"
            )
        return previous, "reused the previous model (nightly.retrain=false)"
    if previous and cfg.nightly.warm_start:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_from=previous))
    outcome = train_model(cfg, date, spark)
    how = f"warm start from {storage.name(previous)}" if previous and cfg.train.init_from else "from scratch"
    return str(outcome.model_dir), f"trained ({how}, {cfg.train.workers} worker(s))"


@dataclass(frozen=True)
class ModelUsed:
    """The model a night's embeddings came from, and how it was obtained."""

    path: str
    version: str
    action: str  # reused / trained (warm start or from scratch)
    trained_on: str | None
    workers: int | None
    test: dict[str, Any] | None  # its test metrics on the date it was trained on
    popularity_test: dict[str, Any] | None


@dataclass(frozen=True)
class Drift:
    """How the published embeddings moved since the previous published date."""

    previous_date: str
    users_in_both: int
    mean_cosine: float | None
    cosine_quantiles: dict[float, float]
    top_interest_changed: float | None  # share of users whose dominant recommended category changed


@dataclass(frozen=True)
class NightlyReport:
    """One night's refresh: every stage's result, the drift and the timings (report.json)."""

    date: str
    encoder: str
    table: str
    model: ModelUsed
    sessionize: SessionizeSummary
    embed: EmbedResult
    drift: Drift | None
    timings_s: dict[str, float]
    report_files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_nightly(spark: SparkSession, cfg: Config, date: str, force_retrain: bool = False) -> NightlyReport:
    """Run the whole refresh for ``date``; returns the report (also written to reports/nightly).

    One run per date at a time: a second run of the same date stops on the first one's lock.
    """
    with logs.stage("nightly", date):
        storage.check_writable(cfg.paths.root)  # one clear line before any stage starts
        check_metastore(spark)
        check_run_date(date, cfg.nightly.max_days_ahead)
        with date_lock(cfg.paths.root, "nightly", date, cfg.nightly.lock_stale_hours):
            return _refresh(spark, cfg, date, force_retrain)


class RunDateError(UserError, ValueError):
    """The run date lies in the future."""


def check_run_date(date: str, max_days_ahead: int, today: dt.date | None = None) -> None:
    """Refuse a run date beyond today (UTC) + ``max_days_ahead``: a skewed clock or a typo would
    otherwise publish a partition for a day whose events have not happened yet."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    if dt.date.fromisoformat(date) > today + dt.timedelta(days=max_days_ahead):
        raise RunDateError(
            f"run date {date} is in the future (today is {today.isoformat()} UTC); check the clock or "
            f"the --date, or raise nightly.max_days_ahead ({max_days_ahead})"
        )


def _refresh(spark: SparkSession, cfg: Config, date: str, force_retrain: bool) -> NightlyReport:
    started = time.perf_counter()
    timings: dict[str, float] = {}
    previous = previous_model(cfg, date)
    base_vocab = f"{previous}/vocab.parquet" if previous else None

    tic = time.perf_counter()
    log.info("sessionize" + (f" (vocabulary grows from {storage.name(previous)})" if previous else ""))
    sessionized = run_sessionize(spark, cfg, date, base_vocab=base_vocab)
    timings["sessionize"] = time.perf_counter() - tic

    tic = time.perf_counter()
    model_dir, action = model_for_date(spark, cfg, date, previous, force_retrain)
    timings["train"] = time.perf_counter() - tic
    log.info(f"model: {action}: {model_dir}")

    tic = time.perf_counter()
    log.info("embed and publish")
    published = run_embed(spark, cfg, date, model_dir)
    timings["embed_publish"] = time.perf_counter() - tic
    moved = drift(spark, cfg, date)
    timings["total"] = time.perf_counter() - started

    report = NightlyReport(
        date=date,
        encoder=cfg.model.encoder,
        table=f"{cfg.embed.database}.{cfg.embed.table}",
        model=_model_used(model_dir, action),
        sessionize=sessionized,
        embed=published,
        drift=Drift(**{k: v for k, v in moved.items() if k != "cosines"}) if moved else None,
        timings_s={k: round(v, 1) for k, v in timings.items()},
    )
    out = nightly_report_dir(cfg, date)
    with storage.local_output(out) as local:  # matplotlib and the report writer work on local files
        files = write_report(Path(local), report, moved["cosines"] if moved else None)
    log.info(f"done in {timings['total']:.1f} s")
    return dataclasses.replace(report, report_files={k: storage.join(out, Path(v).name) for k, v in files.items()})


def _model_used(model_dir: str, action: str) -> ModelUsed:
    metrics = json.loads(storage.read_text(storage.join(model_dir, "metrics.json")))
    return ModelUsed(
        path=model_dir,
        version=storage.name(model_dir),
        action=action,
        trained_on=metrics.get("date"),
        workers=metrics.get("workers"),
        test=metrics.get("test"),
        popularity_test=(metrics.get("popularity") or {}).get("test"),
    )


class BackfillError(UserError, ValueError):
    """A backfill range cannot run as asked (bad range, raw partitions missing)."""


def dates_between(start: str, end: str) -> list[str]:
    """Every date from ``start`` to ``end``, inclusive, in order."""
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    if last < first:
        raise BackfillError(f"backfill range is empty: --from {start} is after --to {end}")
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def nightly_report_dir(cfg: Config, date: str) -> str:
    return storage.join(storage.normalize(cfg.paths.resolve("reports")), "nightly", f"dt={date}")


def report_path(cfg: Config, date: str) -> str:
    """The nightly report of ``date``: written last, so its presence means the date is done."""
    return storage.join(nightly_report_dir(cfg, date), "report.json")


def missing_raw_partitions(cfg: Config, dates: list[str]) -> list[str]:
    """Dates without a ``dt=`` folder in a date-partitioned raw source (none for other sources)."""
    source = cfg.ingest.path or cfg.paths.resolve("raw_events")
    present = storage.list_dirs(source)
    if not any(name.startswith("dt=") for name in present):
        return []  # not partitioned by date: the window is cut by event time instead
    return [d for d in dates if f"dt={d}" not in present]


def run_backfill(spark: SparkSession, cfg: Config, start: str, end: str, redo: bool = False) -> list[NightlyReport]:
    """Run the refresh for every date of [start, end] in date order, skipping dates already done
    (so a stopped backfill resumes where it stopped); ``redo`` runs them all again. Each date
    builds on the newest model before it, so the result does not depend on the order of runs."""
    dates = dates_between(start, end)
    missing = missing_raw_partitions(cfg, dates)
    if missing:
        raise BackfillError(
            f"backfill {start} .. {end}: no raw partition for {', '.join(missing)} under "
            f"{cfg.ingest.path or cfg.paths.resolve('raw_events')}; nothing was run"
        )
    reports = []
    for n, date in enumerate(dates, 1):
        if not redo and storage.is_file(report_path(cfg, date)):
            log.info(f"{date} ({n}/{len(dates)}): already done, skipped")
            continue
        log.info(f"{date} ({n}/{len(dates)})")
        reports.append(run_nightly(spark, cfg, date))
    return reports


def write_report(out: Path, report: NightlyReport, cosines: Any | None) -> dict[str, str]:
    """report.json, report.md and (from the second day on) drift.png."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / "report.json"), "markdown": str(out / "report.md")}
    d = report.drift
    if d is not None and cosines is not None and len(cosines):
        fig = Figure(figsize=(6, 3.5), dpi=100)
        ax = fig.subplots()
        ax.hist(cosines, bins=40, range=(-1, 1), color="#4C72B0")
        mean = float(np.mean(cosines))
        ax.axvline(mean, color="k", ls="--", label=f"mean {mean:.3f}")
        ax.set(
            title=f"embedding drift {d.previous_date} → {report.date}",
            xlabel="cosine(today, previous)",
            ylabel="users",
        )
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "drift.png")
        files["drift_figure"] = str(out / "drift.png")
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))
    s, m, e = report.sessionize, report.model, report.embed
    lines = [
        f"# Nightly refresh {report.date}",
        "",
        f"Table `{report.table}` partition `dt={report.date}` ({e.rows:,} users, "
        f"{e.cold_start:,} cold start, {e.fallback:,} fallback) from model `{m.version}` "
        f"({m.action}).",
        "",
        "| stage | count |",
        "|---|---|",
        f"| raw rows in | {s.rows_in:,} |",
        *[f"| skipped source file: {f.path} ({f.bytes:,} bytes) | {f.error} |" for f in s.skipped_files],
        *[f"| rejected: {reason} | {n:,} |" for reason, n in s.rejected.items()],
        f"| duplicates removed | {s.duplicates_removed:,} |",
        f"| events kept | {s.events_kept:,} |",
        f"| users / trainable / cold | {s.users:,} / {s.train_users:,} / {s.cold_users:,} |",
        f"| sessions | {s.sessions:,} |",
        f"| vocabulary rows | {s.vocab_size:,} |",
        f"| embeddings published | {e.rows:,} |",
        "",
    ]
    if m.test:
        t, p = m.test, m.popularity_test or {}
        lines += [
            f"Model test metrics (trained on {m.trained_on}): NDCG@10 {t.get('full_ndcg@10', 0):.4f}, "
            f"HR@10 {t.get('full_hr@10', 0):.4f} (popularity NDCG@10 {p.get('full_ndcg@10', 0):.4f}).",
            "",
        ]
    lines += [
        "Gates: " + ", ".join(f"{k} {'ok' if g.ok else 'FAILED'} ({g.detail})" for k, g in e.users.gates.items()),
        "",
    ]
    if d:
        lines += [
            f"Drift since {d.previous_date}: mean cosine {d.mean_cosine or 0:.3f} over "
            f"{d.users_in_both:,} users; top interest changed for {d.top_interest_changed or 0:.1%}.",
            "",
            "![drift](drift.png)",
            "",
        ]
    else:
        lines += ["Drift: no earlier partition to compare with.", ""]
    lines += ["Timings (s): " + ", ".join(f"{k} {v}" for k, v in report.timings_s.items()), ""]
    (out / "report.md").write_text("\n".join(lines))
    return files
