"""Sequences Parquet -> tf.data, streamed by Petastorm for training (readers without TensorFlow
are in ``interest.data.files``).

Training streams with Petastorm's batch reader (one element per Parquet row group), re-batched to
the training batch size, shuffled by row group and by blocks of rows, repeated forever (the loop
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
from typing import Any

import numpy as np
import pyarrow as pa
import tensorflow as tf

from interest import storage
from interest.data.files import SequenceSpec, fetch_shard, fixed_width_matrix, to_url
from interest.schema import SEQUENCE_FEATURES, SHIFT, TARGET_POS


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


def _permuted(block: dict[str, tf.Tensor], seed: tf.Tensor) -> dict[str, tf.Tensor]:
    """The rows of a block [n, L] in a random order drawn from ``seed`` (stateless: reproducible)."""
    n = tf.shape(block["item_idx"])[0]
    return _rows(block, tf.argsort(tf.random.stateless_uniform([n], seed=seed)))  # [n] order


def _rows(block: dict[str, tf.Tensor], order: tf.Tensor) -> dict[str, tf.Tensor]:
    """Every feature of a block [n, L] with its rows taken in ``order`` [n]."""
    return {name: tf.gather(values, order) for name, values in block.items()}


def _by_length(block: dict[str, tf.Tensor], batch_size: int, seed: tf.Tensor) -> dict[str, tf.Tensor]:
    """A permuted block [n, L] reordered so that each run of ``batch_size`` rows holds histories of
    similar length, the runs in a random order: batches whose longest history is short, which
    ``trim_padding`` then cuts to that length (an epoch of MovieLens 100K does half the work).
    Rows of equal length keep their permuted order; rows past the last whole batch stay last."""
    n = tf.shape(block["item_idx"])[0]
    length = tf.reduce_sum(tf.cast(block["item_idx"] > 0, tf.int32), axis=1)  # [n]
    order = tf.argsort(length, stable=True)  # [n] shortest first
    runs = n // batch_size
    run_order = tf.argsort(tf.random.stateless_uniform([runs], seed=seed))  # [runs]
    whole = tf.reshape(tf.gather(tf.reshape(order[: runs * batch_size], [runs, batch_size]), run_order), [-1])
    return _rows(block, tf.concat([whole, order[runs * batch_size :]], axis=0))


def trim_padding(inputs: dict[str, tf.Tensor], targets: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """Cut the left padding every row of a training batch shares: [B, L] -> [B, l], l the longest
    real input. Exact for every encoder: padding is masked everywhere and positions count back
    from the latest step, so a step's state does not depend on how much padding precedes it
    (``tests/models/test_encoders.py``)."""
    real = tf.reduce_sum(tf.cast(inputs["item_idx"] > 0, tf.int32), axis=1)  # [B]
    width = tf.shape(targets)[1]
    start = width - tf.clip_by_value(tf.reduce_max(real), 1, width)
    return {f: x[:, start:] for f, x in inputs.items()}, targets[:, start:]


class _FixedWidthResults:
    """Petastorm's results reader with a vectorised conversion of fixed-width list columns.

    Petastorm 0.13 turns each list column of a row group into one NumPy array per row and
    ``np.vstack``s them: Python work per row, on the thread that feeds tf.data, which made the
    stream 5-7x slower than reading the same files with pyarrow. Our sequence columns all have
    ``max_len`` values per row, so a row group's column is its flat values reshaped to [n, L]:
    one copy, no per-row work. A ragged column is refused with the reason.
    """

    batched_output = True

    def read_next(self, workers_pool: Any, schema: Any, ngram: Any) -> Any:
        from petastorm.workers_pool import EmptyResultError

        try:
            table = workers_pool.get_results()
        except EmptyResultError:
            raise StopIteration from None
        return schema.make_namedtuple(**columns_as_matrices(table))


def columns_as_matrices(table: Any) -> dict[str, np.ndarray]:
    """A pyarrow table's columns as NumPy: list columns of one width become [n, width] matrices."""
    return {
        name: fixed_width_matrix(name, column) if pa.types.is_list(column.type) else column.to_numpy()
        for name, column in zip(table.column_names, table.columns)
    }


class _Stopping:
    """Stops and joins a Petastorm reader's workers on ``close``."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader

    def close(self) -> None:
        self.reader.stop()
        self.reader.join()


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
    workers: int = 1,
    by_length: bool = False,
) -> Iterator[tf.data.Dataset]:
    """A tf.data.Dataset of {feature: int32 [B, L]} batches streamed by Petastorm.

    ``by_length`` (with ``shuffle``): each batch holds histories of similar length (``_by_length``).

    ``epochs=None`` repeats forever. Use as a context manager: the reader's threads stop on exit.
    With one worker the batches are a function of the data and the seed; with more, Petastorm
    takes row groups in the order they finish whenever the stream has caught up with its readers,
    so the order varies between runs.
    """
    from petastorm import make_batch_reader
    from petastorm.tf_utils import make_petastorm_dataset

    if not storage.is_local(path) or num_shards:
        # Petastorm reaches remote files only through libhdfs; fetch this worker's shard of the
        # files (one row group each) into scratch and read them locally, unsharded. A local
        # dataset is sharded the same way (by links), so a run's rows and their order do not
        # depend on where the root is: a night on HDFS trains exactly as one on local disk.
        with storage.scratch("interest-shard-") as folder:
            fetch_shard(path, folder, shard, num_shards)
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
                by_length=by_length,
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
            # A finite stream with one worker reads in its own thread (Petastorm's "dummy" pool):
            # Petastorm's thread pool can see its one worker idle just before the last row group
            # is handed out and end the stream without it (rows went missing in about half of the
            # reader tests). An endless stream (training) never ends, so it keeps the thread that
            # reads ahead; with one thread, either way, the batches depend only on the seed.
            reader_pool_type="dummy" if workers == 1 and epochs is not None else "thread",
            workers_count=workers,
            # Row groups waiting for tf.data: Petastorm's default (50) would buffer up to 800 MiB of
            # 16 MiB groups; a few per worker keep the workers ahead of the stream.
            results_queue_size=4 * workers,
        )
    except Exception:
        quiet.__exit__(None, None, None)
        raise
    try:
        # Reader's own __exit__ would also print "Cache cleanup complete." to stdout (we use no cache)
        with contextlib.closing(_Stopping(reader)):
            # The batch reader's results reader is the one place Petastorm converts row groups to
            # NumPy; ours converts fixed-width list columns without per-row work (see above).
            reader._results_queue_reader = _FixedWidthResults()
            ds = make_petastorm_dataset(reader)  # one element per row group
            L = spec.max_len

            def columns(group) -> dict[str, tf.Tensor]:  # [n, L] each, n = rows in the group
                return {f: tf.ensure_shape(tf.cast(getattr(group, f), tf.int32), [None, L]) for f in SEQUENCE_FEATURES}

            # Whole row groups flow through; rows are never split into single elements (an unbatch
            # and a row-wise shuffle buffer cost several times the read, BENCHMARKS.md). Shuffling is by block: the row
            # groups come in a shuffled order, are cut into blocks of ``buffer`` rows, and each
            # block is permuted at once, with a permutation fixed by the seed and the block index.
            ds = ds.map(columns, num_parallel_calls=tf.data.AUTOTUNE)
            if shuffle:
                block_rows = max(buffer, batch_size)
                if by_length:  # whole batches per block, so no batch straddles two blocks' runs
                    block_rows = block_rows // batch_size * batch_size

                def shuffled(i: tf.Tensor, block: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
                    block = _permuted(block, tf.stack([tf.constant(seed, tf.int64), i]))
                    if by_length:
                        block = _by_length(block, batch_size, tf.stack([tf.constant(seed + 1, tf.int64), i]))
                    return block

                ds = ds.rebatch(block_rows).enumerate().map(shuffled, num_parallel_calls=tf.data.AUTOTUNE)
            ds = ds.rebatch(batch_size, drop_remainder=drop_remainder).prefetch(8)
            # tf.data's autotuner, on 2 cores, settles in about one stream of five on settings that
            # run the stages in turn (half the rows/s, both CPUs half idle). Fixed settings do not:
            # a map runs on every core, eight batches wait ready (BENCHMARKS.md, input pipeline).
            options = tf.data.Options()
            options.autotune.enabled = False
            yield ds.with_options(options)
    finally:
        quiet.__exit__(None, None, None)
