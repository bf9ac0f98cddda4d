"""The nightly refresh for one date: sessionize -> train (or reuse) -> embed -> gates -> publish.

Idempotent per date: the sessionize outputs of D are replaced exactly; a model already trained on
D's data is reused instead of retrained (so a second run computes the same embeddings); each
table's dt=D partition is swapped in whole. The vocabulary grows from the previous model's, so
item indices keep their meaning and a warm-started model keeps its items' vectors.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from pyspark.sql import SparkSession

from interest import logs, storage
from interest.config import Config
from interest.errors import UserError
from interest.etl.sessionize import run_sessionize
from interest.layout import Layout
from interest.locks import check_run_date, date_lock
from interest.models.export import ModelNotFoundError, find_model_before, find_model_for_date
from interest.nightly.report import ModelUsed, NightlyReport, track, write_report
from interest.serving.embed import check_within_retention, run_embed
from interest.serving.publish import check_metastore
from interest.serving.quality import run_quality
from interest.training.launch import train_model

log = logging.getLogger(__name__)


def model_for_date(
    spark: SparkSession, cfg: Config, layout: Layout, previous: str | None, force_retrain: bool
) -> tuple[str, str]:
    """(model folder, what was done): reuse D's model, train one, or reuse the previous one."""
    date = layout.date
    existing = find_model_for_date(layout.paths.models, cfg.model.encoder, date)
    if existing and not force_retrain:
        return existing, f"reused the model already trained on {date}"
    if not cfg.nightly.retrain:
        if previous is None:
            raise ModelNotFoundError(
                "nightly.train is reuse but there is no model to reuse: "
                "train one first (jobs/train.py) or set nightly.train: warm"
            )
        return previous, "reused the previous model (nightly.train: reuse)"
    init_from = previous if previous and cfg.nightly.warm_start else None
    outcome = train_model(cfg, date, spark, init_from)
    how = f"warm start from {storage.name(init_from)}" if init_from else "from scratch"
    return str(outcome.model_dir), f"trained ({how}, {cfg.train.workers} worker(s))"


def run_nightly(spark: SparkSession, cfg: Config, date: str, force_retrain: bool = False) -> NightlyReport:
    """Run the whole refresh for ``date``; returns the report (also written to reports/nightly).

    One run per date at a time: a second run of the same date stops on the first one's lock.
    """
    with logs.stage("nightly", date):
        storage.check_writable(cfg.paths.root)  # one clear line before any stage starts
        check_metastore(spark)
        check_run_date(date)
        check_within_retention(spark, cfg, date)  # before a backfill sessionizes and trains for nothing
        with date_lock(cfg.paths.root, "nightly", date):
            return _refresh(spark, cfg, date, force_retrain)


def _refresh(spark: SparkSession, cfg: Config, date: str, force_retrain: bool) -> NightlyReport:
    started = time.perf_counter()
    timings: dict[str, float] = {}
    layout = Layout.of(cfg, date)
    # the newest model trained on data before the date (a backfill never builds on the future)
    previous = find_model_before(layout.paths.models, cfg.model.encoder, date)
    base_vocab = f"{previous}/vocab.parquet" if previous else None

    tic = time.perf_counter()
    log.info("sessionize" + (f" (vocabulary grows from {storage.name(previous)})" if previous else ""))
    sessionized = run_sessionize(spark, cfg, date, base_vocab=base_vocab)
    timings["sessionize"] = time.perf_counter() - tic

    tic = time.perf_counter()
    model_dir, action = model_for_date(spark, cfg, layout, previous, force_retrain)
    timings["train"] = time.perf_counter() - tic
    log.info(f"model: {action}: {model_dir}")

    tic = time.perf_counter()
    log.info("embed and publish")
    published = run_embed(spark, cfg, date, model_dir)
    timings["embed_publish"] = time.perf_counter() - tic
    tic = time.perf_counter()
    quality = run_quality(spark, cfg, date)
    timings["quality"] = time.perf_counter() - tic
    timings["total"] = time.perf_counter() - started

    report = NightlyReport(
        date=date,
        encoder=cfg.model.encoder,
        table=f"{cfg.embed.database}.{cfg.embed.table}",
        model=_model_used(model_dir, action),
        sessionize=sessionized,
        embed=published,
        drift=quality.drift,
        timings_s={k: round(v, 1) for k, v in timings.items()},
        quality=quality.next_day,
    )
    out = layout.report("nightly")
    with storage.local_output(out) as local:  # matplotlib and the report writer work on local files
        files = write_report(Path(local), report, quality.cosines, quality.history)
    log.info(f"done in {timings['total']:.1f} s")
    report = dataclasses.replace(report, report_files={k: storage.join(out, Path(v).name) for k, v in files.items()})
    track(cfg, report)
    alerts = quality.next_day.alerts
    if alerts and cfg.quality.fail_on_alert:
        raise QualityAlertError(f"quality alert ({len(alerts)}): " + "; ".join(alerts))
    return report


class QualityAlertError(UserError, RuntimeError):
    """The night published, but its quality or drift crossed a bound (``quality.fail_on_alert``)."""


def _model_used(model_dir: str, action: str) -> ModelUsed:
    metrics = json.loads(storage.read_text(storage.join(model_dir, "metrics.json")))
    return ModelUsed(
        path=model_dir,
        version=storage.name(model_dir),
        action=action,
        trained_on=metrics.get("date"),
        workers=metrics.get("workers"),
        # the field's form (unknown targets as misses) where the model has it; older models: "test"
        test=metrics.get("test_counted") or metrics.get("test"),
        popularity_test=(metrics.get("popularity") or {}).get("test_counted")
        or (metrics.get("popularity") or {}).get("test"),
    )
