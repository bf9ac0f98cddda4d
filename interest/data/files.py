"""Sequences on disk without TensorFlow: the vocabulary, row counts, numpy
rows for evaluation, and the inputs of a training run.

Everything here is pyarrow, NumPy and pandas, so the serving and evaluation stages (and the
training driver) can read sequences without loading TensorFlow; ``interest.data.reader`` builds
the tf.data pipelines on top.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from interest import storage
from interest.errors import UserError
from interest.schema import N_GAP_BUCKETS, SEQUENCE_FEATURES, window_stride

if TYPE_CHECKING:
    from interest.config import Config
    from interest.layout import Layout


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
    def from_config(cls, cfg: Config, vocab_size: int) -> SequenceSpec:
        s = cfg.sessionize
        return cls(
            max_len=s.max_len,
            vocab_size=vocab_size,
            n_event_types=len(s.event_types),
            n_gap_buckets=N_GAP_BUCKETS,
        )


def _dataset(path: str) -> pq.ParquetDataset:
    """A pyarrow dataset on any path the storage layer reaches (local, hdfs://, s3a://)."""
    fs, inner = storage.arrow_filesystem(path)
    return pq.ParquetDataset(inner, filesystem=fs)


def read_vocab(path: str) -> pd.DataFrame:
    """A vocabulary folder -> pandas, ordered by item index."""
    return _dataset(path).read().to_pandas().sort_values("item_idx")


def fetch_shard(path: str, folder: str, shard: int | None, num_shards: int | None) -> None:
    """Put this worker's share of the Parquet files under ``path`` (every ``num_shards``-th file in
    name order) into a local ``folder``: copied from remote storage, linked from a local disk. One
    rule for both, so a run reads the same rows in the same order wherever its root is."""
    files = sorted(f.path for f in _dataset(path).fragments)  # inner paths of the Parquet files
    mine = files[shard::num_shards] if shard is not None and num_shards else files
    if not mine:
        raise ValueError(f"no Parquet files for shard {shard} of {num_shards} under {path}")
    base = path.rstrip("/")
    root = storage.fs_path(base)[1].rstrip("/")
    for inner in mine:
        target = f"{folder}/{inner.rsplit('/', 1)[-1]}"
        if storage.is_local(path):
            os.symlink(inner, target)
        else:
            storage.download(base + inner[len(root) :], target)


def count_rows(path: str) -> int:
    """Rows of a Parquet dataset from its footers (no data read)."""
    return sum(frag.metadata.num_rows for frag in _dataset(path).fragments)


def load_rows(
    path: str,
    columns: list[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    window: Literal["latest", "earliest"] = "latest",
) -> dict[str, np.ndarray]:
    """Read a (small) sequences dataset into numpy, sorted by user, optionally a fixed sample.

    Used for evaluation and tests: the order and the sample depend only on the data and the seed,
    so every worker computes the same metric from the same rows. Each user's latest window is read
    (the one with the held-out targets); ``window="earliest"`` reads the oldest stored window instead,
    adding ``complete`` (it starts at the user's first step: ``max_windows`` did not cut it off).
    """
    dataset = _dataset(path)
    cols = list(columns or ["user_id", *SEQUENCE_FEATURES, "n_steps", "history_idx"])
    if "history_idx" not in dataset.schema.names:  # written before the column existed
        cols = [c for c in cols if c != "history_idx"]
    if "window" in dataset.schema.names and window == "latest":
        table = dataset.read(columns=[*cols, "window"])
        table = table.filter(pc.equal(table.column("window"), 0)).drop(["window"])
    elif "window" in dataset.schema.names:  # the row with the highest window number per user
        table = dataset.read(columns=list(dict.fromkeys([*cols, "user_id", "window", "n_steps", "item_idx"])))
        table = table.sort_by([("user_id", "ascending"), ("window", "descending")])
        users = table.column("user_id").to_numpy(zero_copy_only=False)
        table = table.take(np.flatnonzero(np.r_[True, users[1:] != users[:-1]]))
        lengths = pc.list_value_length(table.column("item_idx"))  # max_len
        stride = window_stride(int(pc.max(lengths).as_py() or 0))
        ends = pc.subtract(table.column("n_steps"), pc.multiply(table.column("window"), stride))
        table = table.append_column("complete", pc.less_equal(ends, lengths)).select([*cols, "complete"])
    else:
        table = dataset.read(columns=cols)
        if window == "earliest":
            table = table.append_column("complete", pa.array(np.ones(table.num_rows, bool)))
    if "user_id" in cols:
        table = table.sort_by("user_id")
    if limit is not None and table.num_rows > limit:
        pick = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=limit, replace=False))
        table = table.take(pick)
    out: dict[str, np.ndarray] = {}
    for name in table.column_names:
        col = table.column(name)
        if name in SEQUENCE_FEATURES:
            out[name] = fixed_width_matrix(name, col).astype(np.int32, copy=False)
        elif name == "history_idx":  # ragged: one array per user
            out[name] = np.array([np.asarray(v, dtype=np.int64) for v in col.to_pylist()], dtype=object)
        else:
            out[name] = col.to_numpy(zero_copy_only=False)
    return out


def stored_windows(path: str, users: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every stored window of ``users`` (ids sorted, as :func:`load_rows` returns them), oldest
    first: ({feature: [N, C, L]}, fresh [N, C, L]) with C the most windows any of them has, all
    padding where a user has fewer. ``fresh`` marks each step once: an older window's last steps
    repeat the first of the next (``schema.WINDOW_STRIDE_OFFSET``)."""
    from interest.schema import fresh_positions

    table = _dataset(path).read(columns=["user_id", "window", *SEQUENCE_FEATURES])
    ids = table.column("user_id").to_numpy(zero_copy_only=False).astype(str)
    row = np.searchsorted(users.astype(str), ids)
    found = (row < len(users)) & (users.astype(str)[np.minimum(row, len(users) - 1)] == ids)
    window = table.column("window").to_numpy()
    depth = int(window[found].max()) + 1 if found.any() else 1
    width = len(table.column("item_idx")[0]) if len(table) else 1
    out = {}
    for f in SEQUENCE_FEATURES:
        full = np.zeros((len(users), depth, width), np.int32)
        full[row[found], depth - 1 - window[found]] = fixed_width_matrix(f, table.column(f))[found]
        out[f] = full
    return out, (out["item_idx"] > 0) & np.asarray(fresh_positions(depth, width))


def training_sequences(path: str, column: str = "item_idx") -> list[np.ndarray]:
    """Each user's training steps (oldest first) of one feature: :func:`training_columns`."""
    return training_columns(path, (column,))[column]


def training_columns(path: str, columns: Sequence[str] = ("item_idx",)) -> dict[str, list[np.ndarray]]:
    """Each user's training steps (oldest first) from a ``train`` sequences dataset: the stored
    windows joined (an older window repeats the first 3 steps of the next one) without the held-out
    last steps. What the loss and the counts behind popularity see, one array per user and feature,
    for baselines that learn from sequences. ``columns``: the features read in one pass (item
    indices, the ``session_idx`` aligned with them, ...); padding is where the item is."""
    from interest.schema import HELD_OUT_STEPS, WINDOW_STRIDE_OFFSET

    dataset = _dataset(path)
    windowed = ["window"] if "window" in dataset.schema.names else []
    names = list(dict.fromkeys(["user_id", "item_idx", *columns, *windowed]))
    table = dataset.read(columns=names)
    if "window" in names:
        table = table.sort_by([("user_id", "ascending"), ("window", "descending")])
    else:
        table = table.sort_by("user_id")
    users = table.column("user_id").to_numpy(zero_copy_only=False)
    items = fixed_width_matrix("item_idx", table.column("item_idx"))  # [R, L]
    values = {c: items if c == "item_idx" else fixed_width_matrix(c, table.column(c)) for c in columns}  # [R, L]
    windows = table.column("window").to_numpy() if "window" in names else np.zeros(len(users), np.int64)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(users)]
    real = items > 0  # [R, L]
    out: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    for lo, hi in zip(starts.tolist(), ends.tolist()):
        for c, grid in values.items():
            parts = [
                row[keep][:-WINDOW_STRIDE_OFFSET] if w > 0 else row[keep]
                for row, keep, w in zip(grid[lo:hi], real[lo:hi], windows[lo:hi].tolist())
            ]
            out[c].append(np.concatenate(parts)[:-HELD_OUT_STEPS])
    return out


def fixed_width_matrix(name: str, column: pa.ChunkedArray) -> np.ndarray:
    """A list column with the same number of values in every row as one [n, width] array.

    The flat values reshaped: no per-row work, which matters on the training stream. Sequence
    columns are padded to ``max_len`` by sessionize; a ragged or null one is refused with the reason.
    """
    array = column.combine_chunks()
    shortest, longest = pc.min_max(pc.list_value_length(array)).values()
    values = array.flatten()
    if len(array) and (shortest != longest or array.null_count or values.null_count):
        raise ValueError(
            f"sequence column {name!r} must hold one padded array of the same length per row "
            f"(got lengths {shortest.as_py()}..{longest.as_py()}, {array.null_count} null rows, "
            f"{values.null_count} null values): write it with the sessionize job's padding"
        )
    width = longest.as_py() if len(array) else 0
    return values.to_numpy().reshape(len(array), width)  # [n, L]


def item_counts_from_vocab(vocab: pd.DataFrame, vocab_size: int) -> np.ndarray:
    """Training step counts per item index [V] (0 for pad/unknown), the popularity prior."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    counts[vocab["item_idx"].to_numpy()] = vocab["count"].to_numpy()
    return counts


class TrainingInputError(UserError, FileNotFoundError):
    """The sequences for the date are missing or empty."""


@dataclass(frozen=True)
class TrainData:
    """Inputs of a training run: the streamed train rows and in-memory evaluation rows."""

    train_path: str
    train_rows: int
    spec: SequenceSpec
    item_counts: np.ndarray  # [V] step counts per item index (0 for pad/unknown)
    eval_rows: dict[str, np.ndarray]  # load_rows(...) of a fixed user sample
    vocab: pd.DataFrame  # item_idx, item_id, category, count (exported; new items' starting vectors)


def check_training_inputs(layout: Layout) -> int:
    """The train rows of the layout's date; a missing or empty input is one clear error (cheap:
    the distributed launcher checks this on the driver before it starts any worker)."""
    paths, date = layout.sessionized, layout.date
    for name, path in (("sequences", paths.train), ("vocabulary", paths.vocab)):
        if not storage.exists(path):
            raise TrainingInputError(
                f"no {name} for {date} at {path}: run jobs/sessionize.py --date {date} first "
                "(or check paths.root / paths.sequences)"
            )
    rows = count_rows(paths.train)
    if rows == 0:
        raise TrainingInputError(f"the training sequences for {date} are empty ({paths.train})")
    return rows


def training_data(cfg: Config, layout: Layout) -> TrainData:
    """Check the inputs, load the vocabulary and sample the evaluation users of the layout's date."""
    rows = check_training_inputs(layout)
    paths = layout.sessionized
    vocab = read_vocab(paths.vocab)
    vocab_size = int(vocab["item_idx"].max()) + 1 if len(vocab) else 2
    spec = SequenceSpec.from_config(cfg, vocab_size)
    eval_rows = load_rows(paths.train, limit=cfg.eval.users or None, seed=cfg.train.seed)
    return TrainData(paths.train, rows, spec, item_counts_from_vocab(vocab, vocab_size), eval_rows, vocab)
