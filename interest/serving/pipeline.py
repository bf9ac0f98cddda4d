"""The embed stage: a model and one date's inference rows -> three published dt partitions.

- ``user_interest_embeddings``: user_id, embedding, interests, top_items, n_events,
  is_cold_start, model_version (the contract downstream systems join against);
- ``item_embeddings``: the model's item vectors (item_idx, item_id, category, embedding);
- ``user_recommendations``: top-N new items per user by dot product, and the user's top interest
  (the dominant category of those items), so the embeddings can be used and checked at once.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from interest.config import Config
from interest.data.files import SessionizePaths, read_vocab
from interest.errors import UserError
from interest.models.export import load_model
from interest.serving import embed, publish
from interest.spark import JobLabels

USER_DDL = (
    "user_id STRING, embedding ARRAY<FLOAT>, interests ARRAY<ARRAY<FLOAT>>, "
    "top_items ARRAY<STRUCT<item_id: STRING, weight: FLOAT>>, n_events BIGINT, "
    "is_cold_start BOOLEAN, model_version STRING"
)
ITEM_DDL = "item_idx INT, item_id STRING, category STRING, embedding ARRAY<FLOAT>, model_version STRING"
RECS_DDL = (
    "user_id STRING, recommendations ARRAY<STRUCT<item_id: STRING, score: FLOAT>>, "
    "top_interest STRING, model_version STRING"
)


class EmbedInputError(UserError, ValueError):
    """The inference rows and the model do not fit together (or are missing)."""


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


def check_max_len(rows: DataFrame, model_max_len: int, model_dir: str, date: str) -> None:
    """The date's arrays must be as long as the model's positions (else a Keras shape error)."""
    stored = rows.select(F.size("item_idx").alias("n")).first()
    if stored is not None and stored["n"] != model_max_len:
        raise EmbedInputError(
            f"the sequences of {date} hold {stored['n']} steps per row but model {model_dir} was "
            f"trained with max_len {model_max_len}: sessionize {date} with "
            f"--set sessionize.max_len={model_max_len}, or train a model on these sequences"
        )


def table_location(cfg: Config, table: str) -> str:
    return f"{cfg.paths.resolve('warehouse')}/{cfg.embed.database}.db/{table}"


def _users_table(spark: SparkSession, name: str) -> DataFrame:
    """The optional list of known users: a metastore table or a Parquet path with ``user_id``."""
    return spark.read.parquet(name) if "/" in name else spark.table(name)


def run_embed(spark: SparkSession, cfg: Config, date: str, model_dir: str) -> dict[str, Any]:
    """Embed every active user of ``date`` with the model and publish the three tables."""
    started = time.perf_counter()
    e = cfg.embed
    paths = SessionizePaths.for_date(cfg, date)
    try:
        rows = spark.read.parquet(paths.infer)
        date_vocab = read_vocab(paths.vocab)
    except Exception as exc:
        if "PATH_NOT_FOUND" in str(exc) or "does not exist" in str(exc).lower() or isinstance(exc, FileNotFoundError):
            raise EmbedInputError(
                f"no inference rows for {date} at {paths.infer}: run jobs/sessionize.py --date {date} first"
            ) from None
        raise
    model = load_model(model_dir)
    check_vocab_compatible(model.vocab, date_vocab, model_dir, date)
    check_max_len(rows, int(model.encoder.args["max_len"]), model_dir, date)
    embedded = embed.embed_users(
        spark, rows, model, date_vocab, e.top_items, e.top_n_recommendations, e.cold_start_min_steps, e.batch_size
    )
    if e.users_table:
        prior = embed.popularity_prior(model, date_vocab)
        popular = date_vocab[date_vocab.item_idx < model.encoder.args["vocab_size"]].nlargest(
            e.top_n_recommendations, "count"
        )
        recs = list(zip(popular.item_id.astype(str), popular["count"].astype(float) / max(popular["count"].sum(), 1)))
        embedded = embedded.unionByName(
            embed.fallback_users(spark, _users_table(spark, e.users_table), embedded, prior, model.version, recs)
        )
    embedded = embedded.persist(StorageLevel.MEMORY_AND_DISK)
    label = JobLabels(spark, "embed", date)
    label("inference")
    tic = time.perf_counter()
    embedded_rows = embedded.count()  # the inference pass itself (publishing reads the cache)
    inference_s = time.perf_counter() - tic
    active = rows.count()
    db = e.database
    tables = {e.table: USER_DDL, e.item_table: ITEM_DDL, e.recommendations_table: RECS_DDL}
    for table, ddl in tables.items():
        publish.ensure_table(spark, db, table, ddl, table_location(cfg, table), e.table_format)
    user_gates = publish.Gates(
        vector_columns=["embedding", "interests"],
        unit_norm_column="embedding",
        norm_tolerance=e.norm_tolerance,
        expected_rows=active,
        coverage_filter="n_events > 0",
        min_coverage=e.min_coverage,
        max_row_change=e.max_row_change,
    )
    report: dict[str, Any] = {
        "model": model_dir,
        "model_version": model.version,
        "active_users": active,
        "inference_seconds": round(inference_s, 2),
        "users_per_second": round(embedded_rows / max(inference_s, 1e-9), 1),
    }
    tic = time.perf_counter()
    label(f"publish {e.table}")
    report["users"] = publish.publish_partition(
        spark,
        db,
        e.table,
        date,
        embedded.select(*embed.USER_COLUMNS),
        user_gates,
        table_location(cfg, e.table),
        e.table_format,
    )
    items = spark.createDataFrame(embed.item_embeddings(model, date_vocab), schema=ITEM_DDL)
    label(f"publish {e.item_table}")
    report["items"] = publish.publish_partition(
        spark,
        db,
        e.item_table,
        date,
        items,
        publish.Gates(vector_columns=["embedding"], unit_norm_column="embedding", norm_tolerance=e.norm_tolerance),
        table_location(cfg, e.item_table),
        e.table_format,
    )
    label(f"publish {e.recommendations_table}")
    report["recommendations"] = publish.publish_partition(
        spark,
        db,
        e.recommendations_table,
        date,
        embedded.select("user_id", "recommendations", "top_interest", "model_version"),
        publish.Gates(),
        table_location(cfg, e.recommendations_table),
        e.table_format,
    )
    report["publish_seconds"] = round(time.perf_counter() - tic, 2)  # stage, gate and commit the three tables
    counts = embedded.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col("is_cold_start").cast("int")).alias("cold"),
        F.sum(F.when(F.col("n_events") == 0, 1).otherwise(0)).alias("fallback"),
    ).collect()[0]
    report.update(rows=int(counts["rows"]), cold_start=int(counts["cold"] or 0), fallback=int(counts["fallback"] or 0))
    tic = time.perf_counter()
    label("retention")
    report["retention_dropped"] = {
        t: publish.apply_retention(spark, db, t, e.retention_days, e.table_format, e.vacuum_retain_hours)
        for t in tables
    }
    report["retention_seconds"] = round(time.perf_counter() - tic, 2)
    embedded.unpersist()
    label.clear()
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report


def drift(spark: SparkSession, cfg: Config, date: str) -> dict[str, Any] | None:
    """How today's embeddings moved since the previous published date (None on the first day).

    mean cosine: between each user's embedding today and at the previous date (users in both);
    top interest changed: share of those users whose dominant recommended category changed.
    """
    e = cfg.embed
    dates = publish.dates(spark, e.database, e.table)
    earlier = [d for d in dates if d < date]
    if date not in dates or not earlier:
        return None
    prev = earlier[-1]
    users = spark.table(f"`{e.database}`.`{e.table}`")
    recs = spark.table(f"`{e.database}`.`{e.recommendations_table}`")
    today = users.where(F.col("dt") == date).select("user_id", F.col("embedding").alias("a"))
    before = users.where(F.col("dt") == prev).select("user_id", F.col("embedding").alias("b"))
    both = today.join(before, "user_id")
    cosine = F.aggregate(
        F.zip_with("a", "b", lambda x, y: x * y), F.lit(0.0).cast("double"), lambda acc, v: acc + v.cast("double")
    )
    frame: Any = both.select(cosine.alias("cos")).toPandas()
    sims = np.asarray(frame["cos"], dtype=np.float64)
    ti = (
        recs.where(F.col("dt") == date)
        .select("user_id", F.col("top_interest").alias("t1"))
        .join(recs.where(F.col("dt") == prev).select("user_id", F.col("top_interest").alias("t0")), "user_id")
    )
    changed = ti.agg(F.avg((F.col("t1") != F.col("t0")).cast("double")).alias("c")).collect()[0]["c"]
    return {
        "previous_date": prev,
        "users_in_both": int(len(sims)),
        "mean_cosine": float(np.mean(sims)) if len(sims) else None,
        "cosine_quantiles": {q: float(np.quantile(sims, q)) for q in (0.1, 0.5, 0.9)} if len(sims) else {},
        "top_interest_changed": float(changed) if changed is not None else None,
        "cosines": sims,
    }
