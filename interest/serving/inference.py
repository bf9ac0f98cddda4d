"""Batch inference: inference rows -> user embeddings, interests, explanations, recommendations.

Runs as ``mapInArrow``: an Arrow batch of rows in, a batch of columns built from NumPy out. The
model folder is shipped to the executors as an archive (``addArchive``: Spark will not ship a local
folder to a cluster) and loaded once per executor Python process (a module-level cache), not per
batch. Item indices the model has never seen (a vocabulary that grew after it was trained) become
the unknown index, so a reused model keeps working on newer data.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import SparkFiles
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

from interest import faults
from interest.models.cold import cold_item_rows
from interest.models.retrieval import Retrieval
from interest.schema import FIRST_ITEM, SEQUENCE_FEATURES, UNKNOWN
from interest.scoring.interests import l2_normalize, retrieve
from interest.scoring.topn import RowIndex, top_weighted_batch

if TYPE_CHECKING:  # TensorFlow loads on first use, after its log level is set (see _model)
    from interest.config import Config
    from interest.models.export import LoadedModel

ITEM_WEIGHT = T.StructType([T.StructField("item_id", T.StringType()), T.StructField("weight", T.FloatType())])
ITEM_SCORE = T.StructType([T.StructField("item_id", T.StringType()), T.StructField("score", T.FloatType())])
# why each recommendation: the interest (slot) that retrieved it and the history items behind it
REASON = T.StructType(
    [
        T.StructField("item_id", T.StringType()),
        T.StructField("interest", T.IntegerType()),
        T.StructField("because", T.ArrayType(T.StringType())),
    ]
)
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
        T.StructField("reasons", T.ArrayType(REASON)),  # one per recommendation, in its order
    ]
)
OUTPUT_ARROW = to_arrow_schema(EMBED_SCHEMA)  # what embed_batch builds
# the published tables, declared here once (interest.serving.embed creates them from these)
USER_COLUMNS = ["user_id", "embedding", "interests", "top_items", "n_events", "is_cold_start", "model_version"]
RECS_COLUMNS = ["user_id", "recommendations", "top_interest", "model_version", "reasons"]
USER_SCHEMA = T.StructType([EMBED_SCHEMA[c] for c in USER_COLUMNS])
RECS_SCHEMA = T.StructType([EMBED_SCHEMA[c] for c in RECS_COLUMNS])
ITEM_SCHEMA = T.StructType(  # what item_embeddings returns
    [
        T.StructField("item_idx", T.IntegerType()),
        T.StructField("item_id", T.StringType()),
        T.StructField("category", T.StringType()),
        T.StructField("embedding", T.ArrayType(T.FloatType())),
        T.StructField("model_version", T.StringType()),
        # an item newer than the model: its category's mean vector (models.cold)
        T.StructField("is_cold_start", T.BooleanType()),
    ]
)

_MODELS: dict[str, object] = {}


def _model(path: str):
    """Load a model once per Python process."""
    if path not in _MODELS:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from interest.models.export import load_model

        _MODELS[path] = load_model(path)
    return _MODELS[path]


@dataclass(frozen=True, kw_only=True)
class Embedder:
    """What one batch of inference rows is embedded, explained and ranked with.

    ``item_ids`` and ``categories`` map item indices to ids and categories (``categories`` None:
    the top interest is the best recommendation itself). ``table`` ([V, D], default the model's
    item table) is what recommendations are scored against: with :func:`scoring_table`, items
    newer than the model can be recommended too. ``index`` (built over ``table[FIRST_ITEM:]``)
    answers the top-N instead of the exact product: the embed stage passes its quantised index
    above ``serving.index.EXACT_MAX_ITEMS``, and request time always passes the night's index.
    ``retrieval``: whether several interests retrieve, and how their lists merge. ``windows`` > 1:
    the encoder reads each user's stored windows (the row's ``older`` column beside its latest
    window, ``etl.sequences.with_older_windows``), and explains over all of their steps."""

    model: Any
    item_ids: np.ndarray
    categories: np.ndarray | None
    top_k: int  # explanation items per user
    top_n: int  # recommendations per user
    cold_min_steps: int  # fewer steps: flagged cold start
    version: str
    table: np.ndarray | None = None
    index: RowIndex | None = None
    retrieval: Retrieval = Retrieval()
    windows: int = 1


def history_windows(cfg: Config) -> int:
    """How many of a user's stored windows the encoder reads: all that sessionize keeps
    (``sessionize.max_windows``) with ``embed.whole_history``, else the latest."""
    return cfg.sessionize.max_windows if cfg.embed.whole_history else 1


def _fixed_rows(column: pa.Array, width: int) -> np.ndarray:
    """A list column whose every row holds ``width`` values -> [B, width] int32 (no per-row work)."""
    column = column.cast(pa.list_(pa.int32())) if column.type != pa.list_(pa.int32()) else column
    offsets = np.asarray(column.offsets)
    if len(column) and (column.null_count or (np.diff(offsets) != width).any()):
        raise ValueError(f"inference rows must hold exactly {width} steps per feature (padded sequences)")
    values = np.asarray(column.values)[offsets[0] : offsets[-1]]
    return values.astype(np.int32, copy=False).reshape(len(column), width)


def _windows(batch: pa.RecordBatch, latest: dict[str, np.ndarray], windows: int) -> dict[str, np.ndarray]:
    """Each user's stored windows, oldest first: the latest ([B, L] each) and the row's ``older``
    ones (a list of (window, features) per user, null for none) -> {feature: [B, C, L]}, all
    padding where a user has fewer than C."""
    b, width = latest["item_idx"].shape
    out = {f: np.zeros((b, windows, width), np.int32) for f in SEQUENCE_FEATURES}
    for f in SEQUENCE_FEATURES:
        out[f][:, -1] = latest[f]
    older = batch.column("older")
    if len(older) and older.null_count < len(older):
        user = np.asarray(pc.list_parent_indices(older))  # [M] each stored window's row
        flat = older.flatten()  # [M] structs
        back = np.asarray(flat.field("window"))  # [M] 1 = the window before the latest
        ok = (back >= 1) & (back < windows)
        for f in SEQUENCE_FEATURES:
            out[f][user[ok], windows - 1 - back[ok]] = _fixed_rows(flat.field(f), width)[ok]
    return out


def _lists(offsets: np.ndarray, values: pa.Array, name: str, depth: int = 0) -> pa.Array:
    """Row offsets and flat values -> the list column ``name`` of OUTPUT_ARROW (``depth`` 1: its
    inner list, for a list of lists)."""
    kind = OUTPUT_ARROW.field(name).type
    for _ in range(depth):
        kind = kind.value_type
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, type=kind)


def _majority(labels: np.ndarray, rows: np.ndarray, b: int) -> list[str | None]:
    """Per row of a batch, the most frequent of its labels (ties: the smallest), None for none.
    labels: flat strings, rows: each label's row index (non-decreasing)."""
    out: list[str | None] = [None] * b
    if not len(labels):
        return out
    names, codes = np.unique(labels.astype(str), return_inverse=True)
    pairs, counts = np.unique(rows.astype(np.int64) * len(names) + codes, return_counts=True)
    row, code = pairs // len(names), pairs % len(names)
    order = np.lexsort((code, -counts, row))
    row, code = row[order], code[order]
    first = np.r_[True, row[1:] != row[:-1]]
    for r, c in zip(row[first].tolist(), code[first].tolist()):
        out[r] = str(names[c])
    return out


def embed_batch(batch: pa.RecordBatch, embedder: Embedder) -> pa.RecordBatch:
    """One Arrow batch of inference rows -> a batch of EMBED_SCHEMA rows (numpy + the model).

    Columns are built as Arrow arrays from flat NumPy values, with no Python object per user:
    per-row Python was a third of inference."""
    e = embedder
    encoder = e.model.encoder
    vocab_size, max_len = encoder.args["vocab_size"], encoder.args["max_len"]
    b = batch.num_rows
    feats = {f: _fixed_rows(batch.column(f), max_len) for f in SEQUENCE_FEATURES}  # [B, L] each
    if e.windows > 1:
        feats = _windows(batch, feats, e.windows)  # [B, C, L] each
    seen = feats["item_idx"].reshape(b, -1)  # [B, L] or [B, C * L]: the steps explained
    feats["item_idx"] = np.where(feats["item_idx"] >= vocab_size, UNKNOWN, feats["item_idx"]).astype(np.int32)
    out = encoder.infer(feats)  # one graph for every batch size: re-runs reproduce it exactly
    user = l2_normalize(out["user"])  # [B, D]
    interests = l2_normalize(out["interests"])  # [B, K, D]
    attention = out["attention"]  # [B, L] ([B, C * L] over several windows)
    table = np.asarray(encoder.item_table) if e.table is None else e.table  # [V, D]
    if "history_idx" in batch.schema.names:
        hist = batch.column("history_idx")
        offsets = np.asarray(hist.offsets)
        histories = np.split(np.asarray(hist.values)[offsets[0] : offsets[-1]], offsets[1:-1] - offsets[0])
    else:
        histories = list(seen)
    best, best_scores, slot, multi = retrieve(  # [B, n] each
        user, interests, out["interest_weight"], seen, histories, table, e.top_n, e.retrieval, e.categories, e.index
    )
    behind = out["interest_attention"] if multi else attention[:, None]  # [B, K, L]: the steps behind each
    found = np.isfinite(best_scores)  # [B, n]: slots with an item left to recommend
    rec_offsets = np.concatenate([[0], np.cumsum(found.sum(1))])
    rec_items = best[found]
    rec_ids = pa.array(e.item_ids[rec_items].astype(str), pa.string())
    recommendations = pa.StructArray.from_arrays(
        [rec_ids, pa.array(best_scores[found], pa.float32())],
        fields=list(OUTPUT_ARROW.field("recommendations").type.value_type),
    )
    reasons = _reasons(rec_ids, slot, found, seen, behind, e.retrieval.because, e.item_ids)
    explained, weight, explain_offsets = top_weighted_batch(seen, attention, e.top_k)
    known = explained < len(e.item_ids)  # an index past the vocabulary explains as a null id
    names = [str(e.item_ids[i]) if ok else None for i, ok in zip(explained.tolist(), known.tolist())]
    top_items = pa.StructArray.from_arrays(
        [pa.array(names, pa.string()), pa.array(weight.astype(np.float32), pa.float32())],
        fields=list(OUTPUT_ARROW.field("top_items").type.value_type),
    )
    # the most frequent category among the recommendations; without categories, the best one
    labels = e.categories if e.categories is not None else e.item_ids
    pick = found if e.categories is not None else found & (np.arange(found.shape[1]) == 0)
    top_interest = _majority(labels[best[pick]], np.nonzero(pick)[0], b)
    d, k = user.shape[1], interests.shape[1]
    columns = [
        batch.column("user_id").cast(pa.string()),
        _lists(np.arange(b + 1) * d, pa.array(user.ravel()), "embedding"),
        _lists(
            np.arange(b + 1) * k,
            _lists(np.arange(b * k + 1) * d, pa.array(interests.ravel()), "interests", 1),
            "interests",
        ),
        _lists(explain_offsets, top_items, "top_items"),
        batch.column("n_events").cast(pa.int64()),
        pa.array(np.asarray(batch.column("n_steps")) < e.cold_min_steps, pa.bool_()),
        pa.array([e.version] * b, pa.string()),
        _lists(rec_offsets, recommendations, "recommendations"),
        pa.array(top_interest, pa.string()),
        _lists(rec_offsets, reasons, "reasons"),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=OUTPUT_ARROW)


def _reasons(
    rec_ids: pa.Array,
    slot: np.ndarray,
    found: np.ndarray,
    window: np.ndarray,
    behind: np.ndarray,
    n_because: int,
    item_ids: np.ndarray,
) -> pa.StructArray:
    """Each recommendation's reason: its interest and that interest's heaviest history items.

    rec_ids: the found recommendations' ids (row-major), slot and found [B, n], window [B, L],
    behind [B, K, L] the steps behind each interest."""
    b, k = behind.shape[:2]
    items, _, offsets = top_weighted_batch(np.repeat(window, k, axis=0), behind.reshape(b * k, -1), n_because)
    row = (np.arange(b)[:, None] * k + slot)[found]  # each recommendation's (user, interest) row
    start, length = offsets[row], offsets[row + 1] - offsets[row]
    ends = np.cumsum(length)
    picks = np.repeat(start - (ends - length), length) + np.arange(int(ends[-1]) if len(ends) else 0)
    named = items[picks]
    known = named < len(item_ids)
    because = pa.array([str(item_ids[i]) if ok else None for i, ok in zip(named.tolist(), known.tolist())], pa.string())
    kind = OUTPUT_ARROW.field("reasons").type.value_type
    return pa.StructArray.from_arrays(
        [
            rec_ids,
            pa.array(slot[found].astype(np.int32), pa.int32()),
            pa.ListArray.from_arrays(pa.array(np.concatenate([[0], ends]), pa.int32()), because, type=kind[2].type),
        ],
        fields=list(kind),
    )


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
    table: np.ndarray | None = None,
    index: RowIndex | None = None,
    retrieval: Retrieval | None = None,
    windows: int = 1,
) -> DataFrame:
    """Inference rows (sequences ``infer``) -> EMBED_SCHEMA rows, one per user.

    ``model`` is the driver's copy (loaded once by the caller); executors load their own from the
    shipped archive. ``vocab`` maps item indices to ids for explanations and recommendations (the
    run date's vocabulary: a superset of the model's when the vocabulary grew). ``table`` is what
    recommendations are scored against (default :func:`scoring_table`), ``index`` an index over
    it that answers them instead (``Embedder``); both are broadcast to the executors.
    ``windows`` > 1: ``rows`` carry their older windows (``etl.sequences.with_older_windows``).
    """
    version = model.version
    shipped = ship_model(spark, model.path)
    ids = item_ids_by_index(model, vocab)
    cats = item_categories(vocab, len(ids))
    table = scoring_table(model, vocab) if table is None else table  # [V, D]
    shared = spark.sparkContext.broadcast((ids, cats, table, index))
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))

    def run(batches: Iterable[pa.RecordBatch]) -> Iterable[pa.RecordBatch]:
        item_ids, categories, table, index = shared.value
        embedder = Embedder(
            model=_model(SparkFiles.get(shipped)),
            item_ids=item_ids,
            categories=categories,
            top_k=top_k,
            top_n=top_n,
            cold_min_steps=cold_min_steps,
            version=version,
            table=table,
            index=index,
            retrieval=retrieval or Retrieval(),
            windows=windows,
        )
        for batch in batches:
            faults.maybe_fail("embed_batch")  # off unless a fault-matrix test asks for it
            if batch.num_rows:
                yield embed_batch(batch, embedder)

    needed = ["user_id", *SEQUENCE_FEATURES, "n_events", "n_steps"]
    needed += [c for c in ("history_idx", "older") if c in rows.columns]
    if windows > 1 and "older" not in rows.columns:
        raise ValueError("reading several windows needs the rows' older windows (etl.sequences.with_older_windows)")
    return rows.select(*needed).mapInArrow(run, EMBED_SCHEMA)


def item_categories(vocab: pd.DataFrame, size: int) -> np.ndarray | None:
    """[size] the category of each item index (``<none>`` where it has none); None when the
    vocabulary has no categories."""
    if "category" not in vocab or not vocab["category"].notna().any():
        return None
    cats = np.array(["<none>"] * size, dtype=object)
    cats[vocab["item_idx"].to_numpy()] = vocab["category"].fillna("<none>").to_numpy()
    return cats


def item_ids_by_index(model: LoadedModel, vocab: pd.DataFrame) -> np.ndarray:
    """[V] the item id of each index of :func:`scoring_table` (``<pad>`` and ``<unknown>`` first)."""
    size = int(max(vocab["item_idx"].max() + 1, model.encoder.args["vocab_size"]))
    ids = np.array([None] * size, dtype=object)
    ids[vocab["item_idx"].to_numpy()] = vocab["item_id"].to_numpy()
    ids[:FIRST_ITEM] = ["<pad>", "<unknown>"]
    return ids


def popularity_prior(model: LoadedModel, vocab: pd.DataFrame) -> np.ndarray:
    """The fallback embedding for a user with no events: the popularity-weighted mean of the
    item embeddings, normalised. Its nearest items are the popular ones."""
    table = np.asarray(model.encoder.item_table)
    counts = np.zeros(len(table))
    known = vocab[vocab["item_idx"] < len(table)]
    counts[known["item_idx"].to_numpy()] = known["count"].to_numpy()
    return l2_normalize(counts @ table / max(counts.sum(), 1.0))


def popular_items(model: LoadedModel, vocab: pd.DataFrame, k: int) -> list[tuple[str, float]]:
    """The fallback's recommendations: the ``k`` items the model knows with the most training
    steps, each scored by its share of their steps. The nightly, request time and the exported
    graph all answer a user without events with these."""
    known = vocab[(vocab["item_idx"] >= FIRST_ITEM) & (vocab["item_idx"] < model.encoder.args["vocab_size"])]
    popular = known.nlargest(k, "count")
    total = max(float(popular["count"].sum()), 1.0)
    return [(str(i), float(c) / total) for i, c in zip(popular["item_id"], popular["count"])]


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
        F.array().cast(T.ArrayType(REASON)).alias("reasons"),  # the popular items: no interest behind them
    )


def scoring_table(model: LoadedModel, vocab: pd.DataFrame) -> np.ndarray:
    """The model's item table, extended to every item of the date's vocabulary: items newer than
    the model get their category's mean vector, or the popularity prior (``models.cold``).
    Returns [V, D] with V = max(the model's, the vocabulary's size)."""
    trained = np.asarray(model.encoder.item_table)  # [V0, D]
    size = int(max(vocab["item_idx"].max() + 1 if len(vocab) else 0, len(trained)))
    return np.concatenate([trained, cold_item_rows(trained, vocab, size)]) if size > len(trained) else trained


def item_embeddings(model: LoadedModel, vocab: pd.DataFrame, table: np.ndarray | None = None) -> pd.DataFrame:
    """Every item of the date's vocabulary as rows: item_idx, item_id, category, embedding
    (L2-normalised), and ``is_cold_start`` for items the model has not trained yet. ``table``:
    :func:`scoring_table`, where the caller has it already."""
    table = l2_normalize(scoring_table(model, vocab) if table is None else table)
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
