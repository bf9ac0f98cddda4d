"""The embed stage: a model and one date's inference rows -> three published dt partitions.

- ``user_interest_embeddings``: user_id, embedding, interests, top_items, n_events,
  is_cold_start, model_version (the contract downstream systems join against);
- ``item_embeddings``: the model's item vectors (item_idx, item_id, category, embedding);
- ``user_recommendations``: top-N new items per user by dot product, and the user's top interest
  (the dominant category of those items), so the embeddings can be used and checked at once.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from interest import logs, storage
from interest.config import Config
from interest.data.files import read_vocab
from interest.errors import UserError
from interest.etl.sequences import with_older_windows
from interest.etl.sessionize import step_rules
from interest.layout import Layout
from interest.models.export import load_model
from interest.models.savedmodel import Catalogue, Retrieval, ServingRules, commit_serving, drop_exports, stage_serving
from interest.schema import FIRST_ITEM, SEQUENCE_FEATURES
from interest.serving import inference, publish
from interest.serving.index import ItemIndex, drop_indexes
from interest.spark import JobLabels

log = logging.getLogger(__name__)

USER_DDL = publish.ddl(inference.USER_SCHEMA)
ITEM_DDL = publish.ddl(inference.ITEM_SCHEMA)
RECS_DDL = publish.ddl(inference.RECS_SCHEMA)


class EmbedInputError(UserError, ValueError):
    """The inference rows and the model do not fit together (or are missing)."""


class RetentionError(UserError, ValueError):
    """The date is older than every date retention keeps: a publish of it would not last the run."""


def check_within_retention(spark: SparkSession, cfg: Config, date: str) -> None:
    """Refuse a date that the run's own retention would drop right after publishing it (a
    backfill older than the ``embed.retention_days`` newest dates), before any work is done."""
    e = cfg.embed
    if e.retention_days <= 0:
        return
    publish.check_metastore(spark)
    if not spark.catalog.tableExists(e.table, e.database):
        return
    newer = [d for d in publish.Table(spark, e.database, e.table, table_format=e.table_format).dates() if d > date]
    if len(newer) >= e.retention_days:
        raise RetentionError(
            f"dt={date} is older than the {e.retention_days} newest date(s) {e.table} keeps "
            f"(embed.retention_days={e.retention_days}; it holds dt={newer[0]} .. dt={newer[-1]}): "
            f"the run's retention would delete it right after publishing; set embed.retention_days "
            f"above {len(newer)} to backfill it"
        )


def check_vocab_compatible(model_vocab: pd.DataFrame, date_vocab: pd.DataFrame, model_dir: str, date: str) -> None:
    """Every index the model knows must mean the same item in the date's vocabulary."""
    merged = model_vocab[["item_idx", "item_id"]].merge(
        date_vocab[["item_idx", "item_id"]], on="item_idx", how="left", suffixes=("_model", "_date")
    )
    differ = merged[merged.item_id_model != merged.item_id_date]
    if len(differ):
        raise EmbedInputError(
            f"the sequences of {date} index items differently from model {model_dir} "
            f"({len(differ)} of {len(merged)} indices differ, e.g. {differ.iloc[0].to_dict()}); "
            f"sessionize {date} with --base-vocab {model_dir}/vocab.parquet"
        )


def check_model_fits(rows: DataFrame, model_args: dict[str, Any], model_dir: str, date: str) -> int:
    """The date's arrays must have the model's features, length and index ranges: a mismatch
    would otherwise surface as a Keras shape error or an out-of-range embedding lookup.

    Returns the number of rows (the active users), counted in the same pass."""
    missing = [f for f in SEQUENCE_FEATURES if f not in rows.columns]
    if missing:
        raise EmbedInputError(
            f"the sequences of {date} lack the feature(s) {', '.join(missing)} that model {model_dir} reads: "
            f"sessionize {date} again with this version"
        )
    stats = rows.agg(
        F.count(F.lit(1)).alias("rows"),
        F.max(F.size("item_idx")).alias("len"),
        F.min(F.size("item_idx")).alias("min_len"),
        F.max(F.array_max("event_type_idx")).alias("event_type"),
        F.max(F.array_max("time_gap_bucket")).alias("gap"),
    ).first()
    if stats is None or stats["len"] is None:
        return 0
    max_len = int(model_args["max_len"])
    if stats["len"] != max_len or stats["min_len"] != max_len:
        raise EmbedInputError(
            f"the sequences of {date} hold {stats['len']} steps per row but model {model_dir} was "
            f"trained with max_len {max_len}: sessionize {date} with "
            f"--set sessionize.max_len={max_len}, or train a model on these sequences"
        )
    for feature, value, known, key in (
        ("event_type_idx", stats["event_type"], model_args.get("n_event_types", 0), "sessionize.event_types"),
        ("time_gap_bucket", stats["gap"], model_args.get("n_gap_buckets", 0), "the time-gap buckets"),
    ):
        if known and value is not None and value > known:
            raise EmbedInputError(
                f"the sequences of {date} use {feature} up to {value} but model {model_dir} knows {known}: "
                f"{key} changed since the model was trained; sessionize with the model's settings or retrain"
            )
    return int(stats["rows"])


def _users_table(spark: SparkSession, name: str) -> DataFrame:
    """The optional list of known users: a metastore table or a Parquet path with ``user_id``."""
    return spark.read.parquet(name) if "/" in name else spark.table(name)


@dataclass(frozen=True)
class EmbedResult:
    """The embed stage for one date: what was inferred, and the three partitions published."""

    date: str
    model: str
    model_version: str
    active_users: int
    rows: int  # users published (active users, plus known users without events as fallback)
    cold_start: int
    fallback: int
    inference_seconds: float
    users_per_second: float
    users: publish.PublishResult
    items: publish.PublishResult
    recommendations: publish.PublishResult
    publish_seconds: float
    retention_dropped: dict[str, list[str]]  # table -> dates dropped by retention
    retention_seconds: float
    index: str  # the nearest-neighbour index of the date's items (interest.serving.index)
    index_kind: str
    index_seconds: float
    saved_model: str  # the model's TensorFlow Serving export (interest.models.savedmodel)
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_embed(spark: SparkSession, cfg: Config, date: str, model_dir: str) -> EmbedResult:
    """Embed every active user of ``date`` with the model and publish the three tables."""
    with logs.stage("embed", date):
        started = time.perf_counter()
        check_within_retention(spark, cfg, date)
        layout = Layout.of(cfg, date)
        rows, date_vocab, model, active = _load_inputs(spark, layout, model_dir)
        windows = inference.history_windows(cfg)
        if windows > 1:  # memory reads every stored window, not only the latest
            rows = _with_history(spark, layout, rows, windows)
        table = inference.scoring_table(model, date_vocab)  # [V, D] what every item is scored with
        tic = time.perf_counter()
        index = build_item_index(model, date_vocab, table, date)  # saved once the tables are published
        # the night's SavedModel and index are written before anything is published (a models
        # folder that cannot be written stops the night here), under names no reader loads, and
        # put in place once the tables are published
        saved_model = layout.saved_model(model.path)
        staged_model = stage_serving(
            model.encoder, catalogue(model, date_vocab, table, cfg), serving_rules(cfg), model.version, saved_model
        )
        index_folder = layout.index(model_dir)
        staged_index = index.save(storage.staging_name(index_folder))
        index_s = time.perf_counter() - tic
        embedded = _embedded_users(spark, cfg, rows, model, date_vocab, table, index)
        embedded = embedded.persist(StorageLevel.MEMORY_AND_DISK)
        label = JobLabels(spark, "embed", date)
        try:
            label("inference")
            tic = time.perf_counter()
            embedded_rows = embedded.count()  # the inference pass itself (publishing reads the cache)
            inference_s = time.perf_counter() - tic
            tic = time.perf_counter()
            with publish.metastore_errors(spark):  # it may go away after the check, too
                users, items, recs = _publish_tables(
                    spark, cfg, layout, model, date_vocab, table, embedded, active, label
                )
            publish_s = time.perf_counter() - tic
            counts = embedded.agg(
                F.count(F.lit(1)).alias("rows"),
                F.sum(F.col("is_cold_start").cast("int")).alias("cold"),
                F.sum(F.when(F.col("n_events") == 0, 1).otherwise(0)).alias("fallback"),
            ).collect()[0]
            tic = time.perf_counter()
            label("retention")
            dropped = _apply_retention(spark, cfg)
            retention_s = time.perf_counter() - tic
        finally:
            embedded.unpersist()
            label.clear()
        tic = time.perf_counter()
        storage.replace(staged_index, index_folder)
        if commit_serving(staged_model, saved_model):
            log.info(f"SavedModel for TensorFlow Serving written to {saved_model}")
        drop_indexes(model_dir, dropped.get(cfg.embed.table, []))
        drop_exports(model_dir, dropped.get(cfg.embed.table, []))
        index_s += time.perf_counter() - tic
        result = EmbedResult(
            date=date,
            model=model_dir,
            model_version=model.version,
            active_users=active,
            rows=int(counts["rows"]),
            cold_start=int(counts["cold"] or 0),
            fallback=int(counts["fallback"] or 0),
            inference_seconds=round(inference_s, 2),
            users_per_second=round(embedded_rows / max(inference_s, 1e-9), 1),
            users=users,
            items=items,
            recommendations=recs,
            publish_seconds=round(publish_s, 2),  # stage, gate and commit the three tables
            retention_dropped=dropped,
            retention_seconds=round(retention_s, 2),
            index=index_folder,
            index_kind=index.meta.kind,
            index_seconds=round(index_s, 2),
            saved_model=saved_model,
            seconds=round(time.perf_counter() - started, 2),
        )
        log.info(
            f"{result.rows:,} users ({result.cold_start:,} cold start) published with model "
            f"{result.model_version}; {result.users_per_second:,.0f} users/s, {result.seconds} s"
        )
        return result


def serving_rules(cfg: Config) -> ServingRules:
    """The sessionize stage's step rules (``step_rules``, the one definition) and this run's output
    sizes, for the exported graph."""
    rules, e = step_rules(cfg.sessionize), cfg.embed
    return ServingRules(
        event_types=tuple(cfg.sessionize.event_types),
        gap_minutes=rules.gap_minutes,
        max_events=rules.max_events,
        max_minutes=rules.max_minutes,
        edges_s=rules.edges_s,
        top_n=e.top_n_recommendations,
        top_items=e.top_items,
        cold_start_min_steps=e.cold_start_min_steps,
        ts_format=cfg.ingest.ts_format,
        retrieval=Retrieval.of(e),
        bot_max_events_per_day=cfg.sessionize.bot_max_events_per_day,
        bot_policy=cfg.sessionize.bot_policy,
        windows=inference.history_windows(cfg),
    )


def catalogue(model: Any, vocab: pd.DataFrame, table: np.ndarray, cfg: Config) -> Catalogue:
    """The night's items as this stage scores them, and its fallback, for the exported graph."""
    ids = inference.item_ids_by_index(model, vocab)
    return Catalogue(
        item_ids=ids,
        table=table,
        prior=inference.popularity_prior(model, vocab),
        popular=inference.popular_items(model, vocab, cfg.embed.top_n_recommendations),
        categories=inference.item_categories(vocab, len(ids)),
    )


def build_item_index(model: Any, vocab: pd.DataFrame, table: np.ndarray, date: str) -> ItemIndex:
    """The index of exactly what the recommendations are scored against (``table`` [V, D]: every
    real item of the date, new ones at their category's mean), with the model's version."""
    ids = inference.item_ids_by_index(model, vocab)  # [V]
    return ItemIndex.build(table[FIRST_ITEM:], ids[FIRST_ITEM:], model.version, date)


def _load_inputs(spark: SparkSession, layout: Layout, model_dir: str) -> tuple[DataFrame, pd.DataFrame, Any, int]:
    """The date's inference rows, their count and vocabulary, and the model, checked to fit together."""
    paths, date = layout.sessionized, layout.date
    for what, path in (("inference rows", paths.infer), ("vocabulary", paths.vocab)):
        if not storage.exists(path):
            raise EmbedInputError(f"no {what} for {date} at {path}: run jobs/sessionize.py --date {date} first")
    rows = spark.read.parquet(paths.infer)
    date_vocab = read_vocab(paths.vocab)
    publish.check_metastore(spark)  # before inference, not after it
    model = load_model(model_dir)
    check_vocab_compatible(model.vocab, date_vocab, model_dir, date)
    active = check_model_fits(rows, model.encoder.args, model_dir, date)
    return rows, date_vocab, model, active


def _with_history(spark: SparkSession, layout: Layout, rows: DataFrame, windows: int) -> DataFrame:
    """The inference rows with each user's older stored windows (``embed.whole_history``)."""
    train = layout.sessionized.train
    if not storage.exists(train):
        raise EmbedInputError(
            f"no stored windows for {layout.date} at {train}: embed.whole_history reads them; "
            f"run jobs/sessionize.py --date {layout.date} first"
        )
    return with_older_windows(rows, spark.read.parquet(train), windows)


def _embedded_users(
    spark: SparkSession,
    cfg: Config,
    rows: DataFrame,
    model: Any,
    date_vocab: pd.DataFrame,
    table: np.ndarray,
    index: ItemIndex,
) -> DataFrame:
    """Active users embedded by the model, plus (with ``embed.users_table``) every known user
    without events today, who gets the popularity prior and the most popular items. The top-N
    comes from the index where it is the quantised one (above ``EXACT_MAX_ITEMS`` items, where it
    answers in half the time of the exact product), from the exact product below."""
    e = cfg.embed
    embedded = inference.embed_users(
        spark,
        rows,
        model,
        date_vocab,
        e.top_items,
        e.top_n_recommendations,
        e.cold_start_min_steps,
        e.batch_size,
        table=table,
        index=index if index.meta.kind == "pq" else None,
        retrieval=Retrieval.of(e),
        windows=inference.history_windows(cfg),
    )
    if not e.users_table:
        return embedded
    prior = inference.popularity_prior(model, date_vocab)
    recs = inference.popular_items(model, date_vocab, e.top_n_recommendations)
    return embedded.unionByName(
        inference.fallback_users(spark, _users_table(spark, e.users_table), embedded, prior, model.version, recs)
    )


def _publish_tables(
    spark: SparkSession,
    cfg: Config,
    layout: Layout,
    model: Any,
    date_vocab: pd.DataFrame,
    scoring: np.ndarray,
    embedded: DataFrame,
    active: int,
    label: JobLabels,
) -> tuple[publish.PublishResult, publish.PublishResult, publish.PublishResult]:
    """Users, items and recommendations, each gated and published as its dt partition."""
    e, date = cfg.embed, layout.date
    tables = {t: publish.Table(spark, e.database, t, layout.table(t), e.table_format) for t in _names(cfg)}
    for table, ddl in zip(_names(cfg), (USER_DDL, ITEM_DDL, RECS_DDL)):
        tables[table].ensure(ddl)

    def put(table: str, frame: DataFrame, gates: publish.Gates) -> publish.PublishResult:
        label(f"publish {table}")
        return tables[table].publish(date, frame, gates, night=f"dt={date} model={model.version}")

    user_gates = publish.Gates(
        vector_columns=["embedding", "interests"],
        unit_norm_column="embedding",
        expected_rows=active,
        coverage_filter="n_events > 0",
        min_coverage=e.min_coverage,
        max_row_change=e.max_row_change,
    )
    users = put(e.table, embedded.select(*inference.USER_COLUMNS), user_gates)
    items = spark.createDataFrame(inference.item_embeddings(model, date_vocab, scoring), schema=ITEM_DDL)
    item_gates = publish.Gates(vector_columns=["embedding"], unit_norm_column="embedding")
    published_items = put(e.item_table, items, item_gates)
    recs = put(
        e.recommendations_table,
        embedded.select(*inference.RECS_COLUMNS),
        publish.Gates(),
    )
    return users, published_items, recs


def _names(cfg: Config) -> tuple[str, str, str]:
    """The three tables the embed stage publishes: users, items, recommendations."""
    return cfg.embed.table, cfg.embed.item_table, cfg.embed.recommendations_table


def _apply_retention(spark: SparkSession, cfg: Config) -> dict[str, list[str]]:
    e = cfg.embed
    return {
        t: publish.Table(spark, e.database, t, table_format=e.table_format).apply_retention(e.retention_days)
        for t in _names(cfg)
    }
