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

from interest import logs, storage, tracking
from interest.config import Config
from interest.errors import UserError
from interest.etl.pipeline import SessionizeSummary, run_sessionize
from interest.locks import date_lock
from interest.models.export import ModelNotFoundError, find_model_before, find_model_for_date
from interest.serving import quality as daily_quality
from interest.serving.pipeline import EmbedResult, drift, run_embed, table_location
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
    quality: daily_quality.NextDayQuality | None = None  # the previous date's recommendations, scored on this date
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
    tic = time.perf_counter()
    scored = _next_day_quality(spark, cfg, date, moved)
    timings["quality"] = time.perf_counter() - tic
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
        quality=scored,
    )
    out = nightly_report_dir(cfg, date)
    with storage.local_output(out) as local:  # matplotlib and the report writer work on local files
        files = write_report(
            Path(local), report, moved["cosines"] if moved else None, daily_quality.history(spark, cfg)
        )
    log.info(f"done in {timings['total']:.1f} s")
    report = dataclasses.replace(report, report_files={k: storage.join(out, Path(v).name) for k, v in files.items()})
    _track(cfg, report)
    if scored.alerts and cfg.quality.fail_on_alert:
        raise QualityAlertError(f"quality alert ({len(scored.alerts)}): " + "; ".join(scored.alerts))
    return report


def _track(cfg: Config, report: NightlyReport) -> None:
    """The night as one MLflow run: stage timings, gate results, drift, next-day quality, alerts."""
    e, q, d = report.embed, report.quality, report.drift
    tags = {"date": report.date, "table": report.table, "model_version": report.model.version}
    with tracking.track(cfg, "nightly", f"nightly dt={report.date}", tags) as run:
        run.params({"date": report.date, "encoder": report.encoder, "model": report.model.action})
        gates = {
            f"gate.{p.table}.{name}": float(g.ok)
            for p in (e.users, e.items, e.recommendations)
            for name, g in p.gates.items()
        }
        s = report.sessionize
        counts = {"rows_in": s.rows_in, "events_kept": s.events_kept, "users": s.users, "published": e.rows}
        run.metrics({"timings_s": report.timings_s, "counts": counts, **gates})
        if d is not None:
            run.metrics({"drift": {k: getattr(d, k) for k in ("users_in_both", "mean_cosine", "top_interest_changed")}})
        if q is not None:
            run.metrics(
                {"next_day": {k: getattr(q, k) for k in ("users", "hr", "ndcg", "popularity_hr", "popularity_ndcg")}}
            )
            run.tags({"alerts": "; ".join(q.alerts) or "none"})
        run.tags({"report": report.report_files.get("markdown")})


class QualityAlertError(UserError, RuntimeError):
    """The night published, but its quality or drift crossed a bound (``quality.fail_on_alert``)."""


def _next_day_quality(
    spark: SparkSession, cfg: Config, date: str, moved: dict[str, Any] | None
) -> daily_quality.NextDayQuality:
    """Score yesterday's recommendations on today's steps, check the alerts, store the row."""
    scored = daily_quality.next_day_quality(spark, cfg, date)
    if moved:
        scored = dataclasses.replace(
            scored, mean_cosine=moved["mean_cosine"], top_interest_changed=moved["top_interest_changed"]
        )
    found = daily_quality.alerts(scored, daily_quality.previous_row(spark, cfg, date), cfg.quality)
    scored = dataclasses.replace(scored, alerts=found)
    daily_quality.publish_quality(spark, cfg, scored, table_location(cfg, cfg.quality.table))
    if scored.users:
        log.info(
            f"next-day quality of {scored.previous_date}'s recommendations: HR@{scored.k} {scored.hr:.4f}, "
            f"NDCG@{scored.k} {scored.ndcg:.4f} over {scored.users:,} users "
            f"(popularity {scored.popularity_hr:.4f} / {scored.popularity_ndcg:.4f})"
        )
    else:
        log.info(f"next-day quality: nothing to score ({scored.note or 'no user active on both days'})")
    for alert in found:
        log.warning(f"ALERT: {alert}")
    return scored


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


def _quality_figure(path: Path, rows: list[dict[str, Any]]) -> None:
    """Next-day HR and NDCG (model and popularity) and drift over the dates of ``daily_quality``."""
    scored = [r for r in rows if r.get("users")]
    fig = Figure(figsize=(8, 3.5), dpi=100)
    left, right = fig.subplots(1, 2)
    days = [r["dt"] for r in scored]
    for key, style, label in (
        ("hr", "o-", "HR (model)"),
        ("ndcg", "s-", "NDCG (model)"),
        ("popularity_hr", "o--", "HR (popularity)"),
        ("popularity_ndcg", "s--", "NDCG (popularity)"),
    ):
        left.plot(days, [r[key] for r in scored], style, label=label)
    left.set(title="next-day quality", ylabel=f"@{rows[-1]['k']}, previous night's list", ylim=(0, None))
    left.legend(fontsize=7)
    drifted = [r for r in rows if r.get("mean_cosine") is not None]
    right.plot([r["dt"] for r in drifted], [r["mean_cosine"] for r in drifted], "o-", label="mean cosine to previous")
    right.plot(
        [r["dt"] for r in drifted], [r["top_interest_changed"] for r in drifted], "s-", label="top interest changed"
    )
    right.set(title="drift", ylim=(0, 1.05))
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    fig.tight_layout()
    fig.savefig(path)


def write_report(
    out: Path, report: NightlyReport, cosines: Any | None, quality_rows: list[dict[str, Any]] | None = None
) -> dict[str, str]:
    """report.json, report.md, (from the second day on) drift.png, and quality.png over the dates."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / "report.json"), "markdown": str(out / "report.md")}
    if quality_rows and any(r.get("users") or r.get("mean_cosine") is not None for r in quality_rows):
        _quality_figure(out / "quality.png", quality_rows)
        files["quality_figure"] = str(out / "quality.png")
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
    qy = report.quality
    if qy is not None and qy.users:
        lines += [
            f"Next-day quality of {qy.previous_date}'s recommendations on {report.date}'s steps "
            f"({qy.users:,} users active on both days): HR@{qy.k} {qy.hr:.4f}, NDCG@{qy.k} {qy.ndcg:.4f} "
            f"(popularity {qy.popularity_hr:.4f} / {qy.popularity_ndcg:.4f}).",
            "",
        ]
        if qy.segments:
            lines += [
                f"| segment (at {qy.previous_date}) | users | HR@{qy.k} | NDCG@{qy.k} | popularity HR@{qy.k} |",
                "|---|---|---|---|---|",
                *[
                    f"| {g['segment']} | {g['users']:,} | {g['hr']:.4f} | {g['ndcg']:.4f} | {g['popularity_hr']:.4f} |"
                    for g in qy.segments
                ],
                "",
            ]
    elif qy is not None:
        lines += [f"Next-day quality: nothing to score ({qy.note or 'no user active on both days'}).", ""]
    if qy is not None and qy.alerts:
        lines += ["**Alerts:**", *[f"- {a}" for a in qy.alerts], ""]
    if "quality_figure" in files:
        lines += ["![quality](quality.png)", ""]
    lines += ["Timings (s): " + ", ".join(f"{k} {v}" for k, v in report.timings_s.items()), ""]
    (out / "report.md").write_text("\n".join(lines))
    return files
