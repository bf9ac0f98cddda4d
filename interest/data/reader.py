"""Sequences Parquet -> tf.data, through Petastorm for training and pyarrow for small eval sets.

Training streams with Petastorm's batch reader (one element per Parquet row group), re-batched to
the training batch size, shuffled by row group and through a buffer, repeated forever (the loop
counts steps per epoch, so every worker runs the same number of steps), and sharded by row group
per worker. Padded arrays get static shapes so the model compiles once.

The leave-one-out split is a view of the same row (see interest.etl.sequences): with ``W`` the
stored window of the latest steps, training inputs are ``W`` shifted right by 3 with targets ``W``
shifted by 2 at every position; validation feeds ``W`` shifted by 2 and asks for ``W[-2]``; test
feeds ``W`` shifted by 1 and asks for ``W[-1]``; inference feeds ``W`` itself.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf

from interest import storage
from interest.schema import SEQUENCE_FEATURES, SHIFT, TARGET_POS, n_gap_buckets


def to_url(path: str) -> str:
    """Petastorm wants URLs: a local path becomes file:///abs/path."""
    if "://" in path:
        return path
    return "file://" + str(Path(path).resolve())  # not as_uri(): it would escape "dt=..."


@dataclass(frozen=True)
class SequenceSpec:
    """What the model needs to know about the data it is fed."""

    max_len: int
    vocab_size: int  # rows of the item table: 0 = pad, 1 = unknown, 2.. = items
    n_event_types: int
    n_gap_buckets: int

    @classmethod
    def from_config(cls, cfg, vocab_size: int) -> SequenceSpec:
        s = cfg.sessionize
        return cls(
            max_len=s.max_len,
            vocab_size=vocab_size,
            n_event_types=len(s.event_types),
            n_gap_buckets=n_gap_buckets(s.time_gap_edges_s),
        )


def shift_right(x: tf.Tensor, k: int) -> tf.Tensor:
    """Drop the last ``k`` steps and left-pad with zeros, keeping the length: [B, L] -> [B, L]."""
    if k == 0:
        return x
    return tf.concat([tf.zeros_like(x[:, :k]), x[:, :-k]], axis=1)


def split_view(batch: dict[str, tf.Tensor], split: str) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """(inputs, targets) of one split from stored windows.

    train: targets [B, L] (next item at every position, 0 where none); valid/test: targets [B];
    infer: targets are the empty [B, 0].
    """
    k = SHIFT[split]
    inputs = {f: shift_right(batch[f], k) for f in SEQUENCE_FEATURES}
    items = batch["item_idx"]
    if split == "train":
        targets = tf.where(inputs["item_idx"] > 0, shift_right(items, 2), tf.zeros_like(items))
    elif split in ("valid", "test"):
        targets = items[:, TARGET_POS[split]]
    else:
        targets = tf.zeros_like(items[:, :0])
    return inputs, targets


def _quiet_petastorm() -> contextlib.AbstractContextManager:
    """Petastorm 0.13 on pyarrow 14 warns on every read (legacy dataset API): hush it here only."""
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*unicode strings.*")
    return ctx


@contextlib.contextmanager
def petastorm_batches(
    path: str,
    spec: SequenceSpec,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    epochs: int | None = None,
    shard: int | None = None,
    num_shards: int | None = None,
    buffer: int = 2048,
    drop_remainder: bool = True,
    workers: int = 2,
) -> Iterator[tf.data.Dataset]:
    """A tf.data.Dataset of {feature: int32 [B, L]} batches streamed by Petastorm.

    ``epochs=None`` repeats forever. Use as a context manager: the reader's threads stop on exit.
    """
    from petastorm import make_batch_reader
    from petastorm.tf_utils import make_petastorm_dataset

    if not storage.is_local(path):
        # Petastorm reaches remote files only through libhdfs; fetch this worker's shard of the
        # files (one row group each) into scratch and read them locally, unsharded.
        with storage.scratch("interest-shard-") as folder:
            _fetch_shard(path, folder, shard, num_shards)
            with petastorm_batches(
                folder,
                spec,
                batch_size,
                shuffle=shuffle,
                seed=seed,
                epochs=epochs,
                buffer=buffer,
                drop_remainder=drop_remainder,
                workers=workers,
            ) as ds:
                yield ds
        return
    quiet = _quiet_petastorm()
    try:
        reader = make_batch_reader(
            to_url(path),
            schema_fields=list(SEQUENCE_FEATURES),
            num_epochs=epochs,
            shuffle_row_groups=shuffle,
            seed=seed,
            cur_shard=shard,
            shard_count=num_shards,
            workers_count=workers,
        )
    except Exception:
        quiet.__exit__(None, None, None)
        raise
    try:
        with reader:
            ds = make_petastorm_dataset(reader)
            L = spec.max_len

            def fix(row) -> dict[str, tf.Tensor]:
                return {f: tf.ensure_shape(tf.cast(getattr(row, f), tf.int32), [L]) for f in SEQUENCE_FEATURES}

            ds = ds.unbatch().map(fix, num_parallel_calls=tf.data.AUTOTUNE)
            if shuffle:
                ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
            ds = ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
            yield ds
    finally:
        quiet.__exit__(None, None, None)


def _dataset(path: str) -> pq.ParquetDataset:
    """A pyarrow dataset on any path the storage layer reaches (local, hdfs://, s3a://)."""
    fs, inner = storage.arrow_filesystem(path)
    return pq.ParquetDataset(inner, filesystem=fs)


def read_vocab(path: str) -> pd.DataFrame:
    """A vocabulary folder -> pandas, ordered by item index."""
    return _dataset(path).read().to_pandas().sort_values("item_idx")


def _fetch_shard(path: str, folder: str, shard: int | None, num_shards: int | None) -> None:
    files = sorted(f.path for f in _dataset(path).fragments)  # inner paths of the Parquet files
    mine = files[shard::num_shards] if shard is not None and num_shards else files
    if not mine:
        raise ValueError(f"no Parquet files for shard {shard} of {num_shards} under {path}")
    base = path.rstrip("/")
    root = storage.fs_path(base)[1].rstrip("/")
    for inner in mine:
        storage.download(base + inner[len(root) :], f"{folder}/{inner.rsplit('/', 1)[-1]}")


def count_rows(path: str) -> int:
    """Rows of a Parquet dataset from its footers (no data read)."""
    return sum(frag.metadata.num_rows for frag in _dataset(path).fragments)


def load_rows(
    path: str, columns: list[str] | None = None, limit: int | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """Read a (small) sequences dataset into numpy, sorted by user, optionally a fixed sample.

    Used for evaluation and tests: the order and the sample depend only on the data and the seed,
    so every worker computes the same metric from the same rows.
    """
    dataset = _dataset(path)
    cols = list(columns or ["user_id", *SEQUENCE_FEATURES, "n_steps", "history_idx"])
    if "history_idx" not in dataset.schema.names:  # written before the column existed
        cols = [c for c in cols if c != "history_idx"]
    if "window" in dataset.schema.names:  # evaluation reads each user's latest window only
        table = dataset.read(columns=[*cols, "window"])
        table = table.filter(pc.equal(table.column("window"), 0)).drop(["window"])
    else:
        table = dataset.read(columns=cols)
    if "user_id" in cols:
        table = table.sort_by("user_id")
    if limit is not None and table.num_rows > limit:
        pick = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=limit, replace=False))
        table = table.take(pick)
    out: dict[str, np.ndarray] = {}
    for name in cols:
        col = table.column(name)
        if name in SEQUENCE_FEATURES:
            flat = col.combine_chunks()
            out[name] = np.asarray(flat.flatten(), dtype=np.int32).reshape(table.num_rows, -1)
        elif name == "history_idx":  # ragged: one array per user
            out[name] = np.array([np.asarray(v, dtype=np.int64) for v in col.to_pylist()], dtype=object)
        else:
            out[name] = col.to_numpy(zero_copy_only=False)
    return out
