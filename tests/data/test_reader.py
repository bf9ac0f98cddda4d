"""Petastorm reading: every row once per epoch, static shapes, disjoint shards, split views."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from interest.data.files import SequenceSpec, count_rows, load_rows
from interest.data.reader import petastorm_batches, split_view


@pytest.fixture(scope="module")
def seq_path(spark, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("seq") / "train")
    rows = [(f"u{i:03d}", [0] * (6 - 1 - i % 5) + list(range(2, 3 + i % 5)), 3 + i % 5) for i in range(40)]
    df = spark.createDataFrame(rows, "user_id string, item_idx array<int>, n_steps int")
    from pyspark.sql import functions as F

    for col in ("event_type_idx", "time_gap_bucket", "session_idx"):
        df = df.withColumn(col, F.transform("item_idx", lambda x: F.when(x > 0, 1).otherwise(0)))
    from interest.io import write_parquet_groups

    write_parquet_groups(df, path, 40, 5, 4, "user_id")
    return path


SPEC = SequenceSpec(max_len=6, vocab_size=10, n_event_types=4, n_gap_buckets=12)


def collect(ds):
    return np.concatenate([b["item_idx"].numpy() for b in ds])


def test_one_epoch_reads_every_row_once_with_static_shapes(seq_path):
    with petastorm_batches(seq_path, SPEC, 7, epochs=1, shuffle=True, drop_remainder=False) as ds:
        assert ds.element_spec["item_idx"].shape.as_list() == [None, 6]
        got = collect(ds)
    expected = load_rows(seq_path)["item_idx"]
    assert len(got) == 40 == count_rows(seq_path)
    assert sorted(map(tuple, got)) == sorted(map(tuple, expected))


def test_shards_are_disjoint_and_cover_everything(seq_path):
    parts = []
    for shard in range(2):
        with petastorm_batches(
            seq_path, SPEC, 4, epochs=1, shuffle=False, shard=shard, num_shards=2, drop_remainder=False
        ) as ds:
            parts.append(collect(ds))
    assert len(parts[0]) > 0 and len(parts[1]) > 0 and len(parts[0]) + len(parts[1]) == 40


def test_repeating_stream_and_fixed_batches(seq_path):
    with petastorm_batches(seq_path, SPEC, 16, epochs=None, shuffle=True, seed=3) as ds:
        batches = [b["item_idx"].shape[0] for b in ds.take(6)]  # more than one epoch
    assert batches == [16] * 6


def test_split_views_of_one_row():
    w = tf.constant([[0, 2, 3, 4, 5, 6]])
    row = {"item_idx": w, "event_type_idx": w, "time_gap_bucket": w, "session_idx": w}
    inp, y = split_view(row, "train")
    assert inp["item_idx"].numpy().tolist() == [[0, 0, 0, 0, 2, 3]]
    assert y.numpy().tolist() == [[0, 0, 0, 0, 3, 4]]  # next item at every real position
    inp, y = split_view(row, "valid")
    assert inp["item_idx"].numpy().tolist() == [[0, 0, 0, 2, 3, 4]] and y.numpy().tolist() == [5]
    inp, y = split_view(row, "test")
    assert inp["session_idx"].numpy().tolist() == [[0, 0, 2, 3, 4, 5]] and y.numpy().tolist() == [6]
    inp, y = split_view(row, "infer")
    assert inp["item_idx"].numpy().tolist() == w.numpy().tolist() and y.shape == (1, 0)


def test_load_rows_sample_is_fixed_by_seed(seq_path):
    a = load_rows(seq_path, limit=10, seed=1)
    b = load_rows(seq_path, limit=10, seed=1)
    assert list(a["user_id"]) == list(b["user_id"]) and list(a["user_id"]) == sorted(a["user_id"])
    assert a["item_idx"].shape == (10, 6)
    assert isinstance(pd.Series(a["user_id"]).iloc[0], str)


@pytest.fixture(scope="module")
def distinct_path(spark, tmp_path_factory):
    """40 distinct rows in several row groups (one file each)."""
    path = str(tmp_path_factory.mktemp("distinct") / "train")
    rows = [(f"u{i:03d}", [0, 0, 0, 2 + i // 8, 2 + i % 8, 9]) for i in range(40)]
    df = spark.createDataFrame(rows, "user_id string, item_idx array<int>")
    from pyspark.sql import functions as F

    for col in ("event_type_idx", "time_gap_bucket", "session_idx"):
        df = df.withColumn(col, F.transform("item_idx", lambda x: F.when(x > 0, 1).otherwise(0)))
    from interest.io import write_parquet_groups

    write_parquet_groups(df, path, 40, 5, 8, "user_id")
    return path


def test_shuffling_mixes_row_groups_without_splitting_rows(distinct_path):
    """Whole row groups flow through the pipeline, yet a batch mixes rows of several groups, every
    row comes once per epoch, and another seed gives another order."""
    from pathlib import Path

    import pyarrow.parquet as pq

    group_of = {
        tuple(row): n
        for n, f in enumerate(sorted(Path(distinct_path).glob("*.parquet")))
        for row in pq.read_table(f).column("item_idx").to_pylist()
    }
    assert len(set(group_of.values())) >= 4  # hash partitioning: groups of uneven size

    def order(seed: int) -> list[tuple[int, ...]]:
        with petastorm_batches(
            distinct_path, SPEC, 10, epochs=1, shuffle=True, seed=seed, buffer=40, drop_remainder=False
        ) as ds:
            return [tuple(row) for batch in ds for row in batch["item_idx"].numpy().tolist()]

    first, second = order(1), order(2)
    assert sorted(first) == sorted(group_of) and len(first) == 40
    assert first != second
    assert len({group_of[row] for row in first[:10]}) >= 3  # one batch draws from several row groups


def test_row_groups_become_matrices_without_changing_a_value():
    import pyarrow as pa

    from interest.data.reader import columns_as_matrices

    rows = [[1, 2, 3], [0, 0, 4], [5, 6, 7]]
    table = pa.table({"item_idx": pa.array(rows, pa.list_(pa.int32())), "n_steps": pa.array([3, 1, 3], pa.int32())})
    out = columns_as_matrices(table.slice(1))  # a slice: offsets that do not start at 0
    np.testing.assert_array_equal(out["item_idx"], np.array(rows[1:], dtype=np.int32))
    assert out["item_idx"].dtype == np.int32 and out["n_steps"].tolist() == [1, 3]


@pytest.mark.parametrize(
    "rows, reason",
    [([[1, 2, 3], [4, 5]], "lengths 2..3"), ([[1, 2], None], "1 null rows"), ([[1, None], [2, 3]], "1 null values")],
)
def test_ragged_or_null_sequences_are_refused_with_the_reason(rows, reason):
    import pyarrow as pa

    from interest.data.reader import columns_as_matrices

    with pytest.raises(ValueError, match=rf"'item_idx' must hold one padded array.*{reason}"):
        columns_as_matrices(pa.table({"item_idx": pa.array(rows, pa.list_(pa.int32()))}))


def test_a_ragged_file_stops_the_stream_with_the_reason(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ragged = pa.array([[1, 2, 3], [4, 5]], pa.list_(pa.int32()))
    pq.write_table(
        pa.table({f: ragged for f in ("item_idx", "event_type_idx", "time_gap_bucket", "session_idx")}),
        tmp_path / "part-0.parquet",
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="must hold one padded array"):
        with petastorm_batches(str(tmp_path), dataclasses.replace(SPEC, max_len=3), 2, epochs=1) as ds:
            list(ds)


def test_the_same_seed_gives_the_same_stream_over_many_epochs(distinct_path):
    """Training is reproducible only if the batches are: 25 epochs of a stream that keeps up with
    its reader (where a second Petastorm thread would reorder row groups) come out the same."""

    def stream() -> np.ndarray:
        with petastorm_batches(distinct_path, SPEC, 4, epochs=None, shuffle=True, seed=5, buffer=8) as ds:
            return np.concatenate([b["item_idx"].numpy() for b in ds.take(250)])

    first = stream()
    assert len(first) == 1000 and np.array_equal(first, stream())


def test_batches_by_length_hold_histories_of_similar_length_and_every_row_once(seq_path):
    """``by_length``: every row once per epoch, each batch's histories within a narrow band of
    lengths (the rows have 1 to 5 steps, 8 of each), the batches in a seeded random order."""

    def batches(seed: int, by_length: bool) -> list[np.ndarray]:
        with petastorm_batches(
            seq_path, SPEC, 8, epochs=1, shuffle=True, seed=seed, buffer=40, by_length=by_length
        ) as ds:
            return [b["item_idx"].numpy() for b in ds]

    grouped = batches(1, True)
    lengths = [sorted((b > 0).sum(1).tolist()) for b in grouped]
    assert sorted(map(tuple, np.concatenate(grouped).tolist())) == sorted(
        map(tuple, np.concatenate(batches(1, False)).tolist())
    )
    assert sorted(lengths) == [[n] * 8 for n in range(1, 6)]  # a block of 40 rows: one length per batch
    firsts = [(b > 0).sum(1)[0] for b in grouped]
    assert firsts != sorted(firsts) and firsts != [(b > 0).sum(1)[0] for b in batches(2, True)]  # seeded order
    mixed = [len(set((b > 0).sum(1).tolist())) for b in batches(1, False)]
    assert max(mixed) > 1  # without it, batches mix lengths
