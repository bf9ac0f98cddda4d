"""Batch inference: inference rows -> user embeddings, interests, explanations, recommendations.

Runs as ``mapInPandas`` over Arrow batches. The model folder is shipped to the executors as an
archive (``addArchive``: Spark will not ship a local folder to a cluster) and loaded once per
executor Python process (a module-level cache), not per batch. Item indices the
model has never seen (a vocabulary that grew after it was trained) become the unknown index, so a
reused model keeps working on newer data.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pyspark import SparkFiles
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from interest import faults
from interest.models.cold import cold_item_rows
from interest.schema import FIRST_ITEM, SEQUENCE_FEATURES, UNKNOWN

if TYPE_CHECKING:  # TensorFlow loads on first use, after its log level is set (see _model)
    from interest.models.export import LoadedModel

ITEM_WEIGHT = T.StructType([T.StructField("item_id", T.StringType()), T.StructField("weight", T.FloatType())])
ITEM_SCORE = T.StructType([T.StructField("item_id", T.StringType()), T.StructField("score", T.FloatType())])
EMBED_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType()),
        T.StructField("embedding", T.ArrayType(T.FloatType())),
        T.StructField("interests", T.ArrayType(T.ArrayType(T.FloatType()))),
        T.StructField("top_items", T.ArrayType(ITEM_WEIGHT)),
        T.StructField("n_events", T.LongType()),
        T.StructField("is_cold_start", T.BooleanType()),
        T.StructField("model_version", T.StringType()),
        T.StructField("recommendations", T.ArrayType(ITEM_SCORE)),
        T.StructField("top_interest", T.StringType()),
    ]
)
USER_COLUMNS = ["user_id", "embedding", "interests", "top_items", "n_events", "is_cold_start", "model_version"]

_MODELS: dict[str, object] = {}


def _model(path: str):
    """Load a model once per Python process."""
    if path not in _MODELS:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from interest.models.export import load_model

        _MODELS[path] = load_model(path)
    return _MODELS[path]


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def top_weighted_items(items: np.ndarray, weights: np.ndarray, k: int) -> list[tuple[int, float]]:
    """History positions -> the k items with the largest summed attention weight (an item seen
    twice gets both positions' weight). items, weights: [L] -> [(item_idx, weight)]."""
    real = items > 0
    totals: dict[int, float] = {}
    for item, w in zip(items[real].tolist(), weights[real].tolist()):
        totals[item] = totals.get(item, 0.0) + w
    return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def top_n_unseen(
    user: np.ndarray, table: np.ndarray, histories, n: int, block: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """The n best-scoring real items per user that are not in their history, a block of users at
    a time: one matrix product and one ``top_k`` for n + (the longest history) candidates, which
    leaves n unseen ones after the seen items are dropped. No per-user Python, and the [users,
    items] scores never exist for more than ``block`` users (80,000 items: 80 MiB).

    user [B, D], table [V, D], histories: per user the item indices seen ([B, L] or ragged) ->
    (items [B, n], scores [B, n]) best first; a slot with nothing left to recommend scores -inf.
    """
    import tensorflow as tf

    hist = [np.asarray(h, dtype=np.int64) for h in histories]
    b, real_items = len(hist), table.shape[0] - FIRST_ITEM
    n = max(min(n, real_items), 0)
    longest = max((len(h) for h in hist), default=0)
    k = min(n + longest, real_items)
    items = np.zeros((b, k), np.int64)
    scores = np.full((b, k), -np.inf, np.float32)
    if n and k:
        candidates = tf.constant(table[FIRST_ITEM:], tf.float32)  # [V - 2, D]: never pad or unknown
        for start in range(0, b, block):
            top = _top_k(tf.constant(user[start : start + block], tf.float32), candidates, k)
            items[start : start + block] = top.indices.numpy() + FIRST_ITEM  # [block, k], best first
            scores[start : start + block] = top.values.numpy()
    # drop what each user has seen: (user, item) keys of the candidates looked up among the history's
    seen_keys = np.repeat(np.arange(b, dtype=np.int64), [len(h) for h in hist]) * table.shape[0]
    seen_keys += np.concatenate(hist) if hist else np.zeros(0, np.int64)
    seen = np.isin(np.arange(b, dtype=np.int64)[:, None] * table.shape[0] + items, seen_keys)  # [B, k]
    scores[seen] = -np.inf
    keep = np.argsort(seen, axis=1, kind="stable")[:, :n]  # the first n unseen, order kept
    return np.take_along_axis(items, keep, 1), np.take_along_axis(scores, keep, 1)


_TOP_K: dict[str, Any] = {}


def _top_k(user, candidates, k: int):
    """matmul then top_k as one compiled graph (built once per process)."""
    import tensorflow as tf

    if "fn" not in _TOP_K:
        _TOP_K["fn"] = tf.function(
            lambda u, c, k: tf.math.top_k(tf.matmul(u, c, transpose_b=True), k), reduce_retracing=True
        )
    return _TOP_K["fn"](user, candidates, tf.constant(k, tf.int32))


def embed_frame(
    pdf: pd.DataFrame,
    model,
    item_ids: np.ndarray,
    categories: np.ndarray | None,
    top_k: int,
    top_n: int,
    cold_min_steps: int,
    version: str,
    table: np.ndarray | None = None,
) -> pd.DataFrame:
    """One Arrow batch of inference rows -> rows of EMBED_SCHEMA (pure pandas/numpy + the model).

    ``table`` ([V, D], default the model's item table) is what recommendations are scored
    against: with :func:`scoring_table`, items newer than the model can be recommended too."""
    encoder = model.encoder
    vocab_size = encoder.args["vocab_size"]
    feats = {f: np.stack(pdf[f].to_numpy()).astype(np.int32) for f in SEQUENCE_FEATURES}  # [B, L]
    seen = feats["item_idx"]
    feats["item_idx"] = np.where(seen >= vocab_size, UNKNOWN, seen).astype(np.int32)
    # eager, not Encoder.infer: a graph traced for whichever batch shape a worker saw first can
    # pick other kernels and change the last bits, and a re-run must reproduce the tables exactly
    out = encoder(feats, training=False)
    user = l2_normalize(np.asarray(out["user"]))  # [B, D]
    interests = l2_normalize(np.asarray(out["interests"]))  # [B, K, D]
    attention = np.asarray(out["attention"])  # [B, L]
    table = np.asarray(encoder.item_table) if table is None else table  # [V, D]
    histories = pdf["history_idx"].to_numpy() if "history_idx" in pdf else list(seen)
    best, best_scores = top_n_unseen(user, table, histories, top_n)  # [B, n] each
    rows = []
    for i in range(len(pdf)):
        found = np.isfinite(best_scores[i])
        recs = [(str(item_ids[j]), float(v)) for j, v in zip(best[i][found], best_scores[i][found])]
        best_i = best[i][found]
        explain = [
            (str(item_ids[j]) if j < len(item_ids) else None, float(w))
            for j, w in top_weighted_items(seen[i], attention[i], top_k)
        ]
        top_interest = None
        if len(best_i):
            labels = categories[best_i] if categories is not None else item_ids[best_i[:1]]
            values, counts = np.unique(labels.astype(str), return_counts=True)
            top_interest = str(values[np.argmax(counts)])
        rows.append(
            (
                pdf["user_id"].iat[i],
                user[i].tolist(),
                interests[i].tolist(),
                explain,
                int(pdf["n_events"].iat[i]),
                bool(pdf["n_steps"].iat[i] < cold_min_steps),
                version,
                recs,
                top_interest,
            )
        )
    return pd.DataFrame(rows, columns=[f.name for f in EMBED_SCHEMA.fields])


_SHIPPED: dict[str, str] = {}


def ship_model(spark: SparkSession, model_dir: str) -> str:
    """Zip the model folder once per session and add it as an archive; returns its SparkFiles name."""
    from interest import storage

    where = storage.normalize(model_dir)
    where = str(Path(where).resolve()) if storage.is_local(where) else where
    key = f"{spark.sparkContext.applicationId}:{where}"  # a new session needs it shipped again
    if key not in _SHIPPED:
        import atexit
        import hashlib
        import shutil
        import tempfile

        name = f"{storage.name(where)}-{hashlib.sha1(where.encode()).hexdigest()[:8]}"
        holder = tempfile.mkdtemp(prefix="interest-model-")
        atexit.register(shutil.rmtree, holder, True)  # served to executors until the driver ends
        with storage.local_copy(where) as folder:  # a remote model is fetched to zip it
            archive = shutil.make_archive(str(Path(holder) / name), "zip", folder)
        spark.sparkContext.addArchive(archive)
        _SHIPPED[key] = Path(archive).name
    return _SHIPPED[key]


def embed_users(
    spark: SparkSession,
    rows: DataFrame,
    model: LoadedModel,
    vocab: pd.DataFrame,
    top_k: int,
    top_n: int,
    cold_min_steps: int,
    batch_size: int,
) -> DataFrame:
    """Inference rows (sequences ``infer``) -> EMBED_SCHEMA rows, one per user.

    ``model`` is the driver's copy (loaded once by the caller); executors load their own from the
    shipped archive. ``vocab`` maps item indices to ids for explanations and recommendations (the
    run date's vocabulary: a superset of the model's when the vocabulary grew).
    """
    version = model.version
    shipped = ship_model(spark, model.path)
    size = int(max(vocab["item_idx"].max() + 1, model.encoder.args["vocab_size"]))
    ids = np.array([None] * size, dtype=object)
    ids[vocab["item_idx"].to_numpy()] = vocab["item_id"].to_numpy()
    ids[:FIRST_ITEM] = ["<pad>", "<unknown>"]
    cats = None
    if "category" in vocab and vocab["category"].notna().any():
        cats = np.array(["<none>"] * size, dtype=object)
        cats[vocab["item_idx"].to_numpy()] = vocab["category"].fillna("<none>").to_numpy()
    shared = spark.sparkContext.broadcast((ids, cats, scoring_table(model, vocab)))
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))

    def run(batches: Iterable[pd.DataFrame]) -> Iterable[pd.DataFrame]:
        loaded = _model(SparkFiles.get(shipped))
        item_ids, categories, table = shared.value
        for pdf in batches:
            faults.maybe_fail("embed_batch")  # off unless a fault-matrix test asks for it
            if len(pdf):
                yield embed_frame(pdf, loaded, item_ids, categories, top_k, top_n, cold_min_steps, version, table)

    needed = ["user_id", *SEQUENCE_FEATURES, "n_events", "n_steps"]
    if "history_idx" in rows.columns:
        needed.append("history_idx")
    return rows.select(*needed).mapInPandas(run, EMBED_SCHEMA)


def popularity_prior(model: LoadedModel, vocab: pd.DataFrame) -> np.ndarray:
    """The fallback embedding for a user with no events: the popularity-weighted mean of the
    item embeddings, normalised. Its nearest items are the popular ones."""
    table = np.asarray(model.encoder.item_table)
    counts = np.zeros(len(table))
    known = vocab[vocab["item_idx"] < len(table)]
    counts[known["item_idx"].to_numpy()] = known["count"].to_numpy()
    return l2_normalize(counts @ table / max(counts.sum(), 1.0))


def fallback_users(
    spark: SparkSession,
    users: DataFrame,
    embedded: DataFrame,
    prior: np.ndarray,
    version: str,
    recommendations: list[tuple[str, float]],
) -> DataFrame:
    """Known users without events in the window get the prior, flagged cold start."""
    missing = (
        users.select(F.col("user_id").cast("string"))
        .distinct()
        .join(embedded.select("user_id"), "user_id", "left_anti")
    )
    vec = [float(x) for x in prior]
    recs = (
        F.array(
            *[
                F.struct(F.lit(i).alias("item_id"), F.lit(float(s)).cast("float").alias("score"))
                for i, s in recommendations
            ]
        )
        if recommendations
        else F.array().cast(T.ArrayType(ITEM_SCORE))
    )
    return missing.select(
        "user_id",
        F.array(*[F.lit(x).cast("float") for x in vec]).alias("embedding"),
        F.array(F.array(*[F.lit(x).cast("float") for x in vec])).alias("interests"),
        F.array().cast(T.ArrayType(ITEM_WEIGHT)).alias("top_items"),
        F.lit(0).cast("long").alias("n_events"),
        F.lit(True).alias("is_cold_start"),
        F.lit(version).alias("model_version"),
        recs.alias("recommendations"),
        F.lit(None).cast("string").alias("top_interest"),
    )


def scoring_table(model: LoadedModel, vocab: pd.DataFrame) -> np.ndarray:
    """The model's item table, extended to every item of the date's vocabulary: items newer than
    the model get their category's mean vector, or the popularity prior (``models.cold``).
    Returns [V, D] with V = max(the model's, the vocabulary's size)."""
    trained = np.asarray(model.encoder.item_table)  # [V0, D]
    size = int(max(vocab["item_idx"].max() + 1 if len(vocab) else 0, len(trained)))
    return np.concatenate([trained, cold_item_rows(trained, vocab, size)]) if size > len(trained) else trained


def item_embeddings(model: LoadedModel, vocab: pd.DataFrame) -> pd.DataFrame:
    """Every item of the date's vocabulary as rows: item_idx, item_id, category, embedding
    (L2-normalised), and ``is_cold_start`` for items the model has not trained yet."""
    table = l2_normalize(scoring_table(model, vocab))
    trained = int(model.encoder.item_table.shape[0])
    items = vocab[vocab["item_idx"] >= FIRST_ITEM].sort_values("item_idx")
    idx = items["item_idx"].to_numpy()
    return pd.DataFrame(
        {
            "item_idx": idx.astype("int32"),
            "item_id": items["item_id"].astype(str).to_numpy(),
            "category": items["category"].to_numpy() if "category" in items else None,
            "embedding": [table[i].tolist() for i in idx],
            "model_version": model.version,
            "is_cold_start": idx >= trained,
        }
    )
