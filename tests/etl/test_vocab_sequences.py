"""Vocabulary (order, min count, unknown index, growth) and per-user sequences (padding, truncation)."""

from __future__ import annotations

from chispa import assert_df_equality
from pyspark.sql import Window
from pyspark.sql import functions as F

from interest.etl import sequences, sessions, vocab


def steps_of(spark, rows):
    """rows: (user, item, second, session, event_rank, gap_bucket)."""
    df = spark.createDataFrame(
        rows, "user_id string, item_id string, sec int, session_idx int, event_rank int, time_gap_bucket int"
    )
    return (
        df.withColumn("ts", F.timestamp_seconds(F.col("sec") + F.lit(1_790_000_000)))
        .withColumn("category", F.concat(F.lit("c_"), "item_id"))
        .withColumn("n_events", F.lit(1).cast("long"))
        .withColumn("step_no", F.row_number().over(Window.partitionBy("user_id").orderBy("sec")))
        .drop("sec")
    )


def test_vocab_frequency_order_min_count_and_ties(spark):
    rows = [
        ("u", "b", 1, 1, 0, 1),
        ("u", "a", 2, 1, 0, 2),
        ("v", "a", 3, 1, 0, 1),
        ("v", "c", 4, 1, 0, 2),
        ("w", "c", 5, 1, 0, 1),
        ("w", "rare", 6, 1, 0, 2),
        ("w", "b", 7, 1, 0, 2),
        ("w", "a", 8, 1, 0, 2),
    ]
    got = vocab.build_vocab(steps_of(spark, rows), min_count=2)
    expected = spark.createDataFrame(
        [(2, "a", "c_a", 3), (3, "b", "c_b", 2), (4, "c", "c_c", 2)],
        "item_idx int, item_id string, category string, count long",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_held_out_targets_do_not_count_for_the_vocabulary(spark):
    # u and v are trainable (3 steps): their last two steps are validation/test targets and
    # must not count. w is too short to be evaluated: all its steps count.
    rows = [
        ("u", "a", 1, 1, 0, 1),
        ("u", "b", 2, 1, 0, 2),
        ("u", "held", 3, 1, 0, 2),
        ("v", "b", 1, 1, 0, 1),
        ("v", "a", 2, 1, 0, 2),
        ("v", "held", 3, 1, 0, 2),
        ("w", "b", 1, 1, 0, 1),
    ]
    events = steps_of(spark, rows).select(
        "user_id",
        "item_id",
        "ts",
        F.lit(None).cast("struct<file:string,block:bigint,row:bigint>").alias("ingest_order"),
        "event_rank",
        "category",
    )
    steps = sessions.to_steps(events, sessions.StepRules(30.0, 200, 240.0, True, (60.0,), min_train_steps=3))
    held = {(r["user_id"], r["item_id"]) for r in steps.where("held_out").collect()}
    assert held == {("u", "b"), ("u", "held"), ("v", "a"), ("v", "held")}
    got = vocab.build_vocab(steps.where(~F.col("held_out")), min_count=1)
    # counting every step would give held -> 2 steps, b -> 3, a -> 2 (and "held" a vocab entry)
    expected = spark.createDataFrame(
        [(2, "b", "c_b", 2), (3, "a", "c_a", 1)], "item_idx int, item_id string, category string, count long"
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_unknown_items_map_to_index_1(spark):
    voc = spark.createDataFrame([(2, "a", "c", 5)], "item_idx int, item_id string, category string, count long")
    steps = steps_of(spark, [("u", "a", 1, 1, 0, 1), ("u", "never-seen", 2, 1, 0, 2)])
    got = {r["item_id"]: r["item_idx"] for r in vocab.apply_vocab(steps, voc).collect()}
    assert got == {"a": 2, "never-seen": vocab.UNKNOWN}


def test_vocab_growth_keeps_existing_indices(spark):
    previous = spark.createDataFrame(
        [(2, "a", "c_a", 9), (3, "old", "c_old", 4)], "item_idx int, item_id string, category string, count long"
    )
    rows = [
        ("u", "new1", 1, 1, 0, 1),
        ("u", "new1", 2, 1, 0, 2),
        ("u", "a", 3, 1, 0, 2),
        ("v", "new2", 4, 1, 0, 1),
        ("v", "new2", 5, 1, 0, 2),
        ("v", "new2", 6, 1, 0, 2),
    ]
    got = vocab.build_vocab(steps_of(spark, rows), min_count=2, previous=previous)
    expected = spark.createDataFrame(
        [(2, "a", "c_a", 1), (3, "old", "c_old", 0), (4, "new2", "c_new2", 3), (5, "new1", "c_new1", 2)],
        "item_idx int, item_id string, category string, count long",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def seq_rows(spark, rows, max_len=4, min_train=3, max_windows=1):
    voc = vocab.build_vocab(steps_of(spark, rows), min_count=1)
    return sequences.build_sequences(vocab.apply_vocab(steps_of(spark, rows), voc), max_len, min_train, max_windows)


def test_padding_alignment_and_targets(spark):
    # u: 3 steps (a, b, c) out of order in the input; v: one step (cold).
    rows = [("u", "c", 30, 2, 1, 9), ("u", "a", 10, 1, 0, 1), ("u", "b", 20, 1, 3, 4), ("v", "a", 5, 1, 0, 1)]
    got = seq_rows(spark, rows).drop("last_ts")
    # vocab: a (2 steps) -> 2, then b -> 3, c -> 4
    expected = spark.createDataFrame(
        [
            ("u", 0, [0, 2, 3, 4], [0, 1, 4, 2], [0, 1, 4, 9], [0, 1, 1, 2], 3, 3, 3, 2, 3, 4, [2, 3, 4]),
            ("v", 0, [0, 0, 0, 2], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 1], 1, 1, 1, 1, None, None, [2]),
        ],
        "user_id string, window int, item_idx array<int>, event_type_idx array<int>, time_gap_bucket array<int>, "
        "session_idx array<int>, length int, n_steps int, n_events long, n_sessions int, "
        "valid_item_idx int, test_item_idx int, history_idx array<int>",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_long_histories_keep_the_latest_steps(spark):
    rows = [("u", f"i{k}", k, 1 + k // 3, 0, 2) for k in range(10)]
    row = seq_rows(spark, rows, max_len=4).first()
    assert row["length"] == 4 and row["n_steps"] == 10
    # every item appears once: frequency ties break by id, so i0 -> 2, i1 -> 3, ... i9 -> 11
    assert row["item_idx"] == [8, 9, 10, 11]
    assert row["session_idx"] == [3, 3, 3, 4]  # steps 6..9 of sessions 1 + k // 3
    assert row["history_idx"] == list(range(2, 12))  # the whole history, not just the window
    assert (row["valid_item_idx"], row["test_item_idx"]) == (10, 11)


def test_training_rows_filter(spark):
    rows = [
        ("u", "a", 1, 1, 0, 1),
        ("u", "b", 2, 1, 0, 2),
        ("u", "c", 3, 1, 0, 2),
        ("v", "a", 1, 1, 0, 1),
        ("v", "b", 2, 1, 0, 2),
    ]
    seqs = seq_rows(spark, rows)
    assert [r["user_id"] for r in sequences.training_rows(seqs, 3).collect()] == ["u"]
    assert seqs.count() == 2


def test_older_windows_make_every_step_a_training_target_once(spark):
    import numpy as np
    import tensorflow as tf

    from interest.data.reader import split_view

    rows = [("u", f"i{k}", k, 1, 0, 2) for k in range(10)] + [("v", "i0", 1, 1, 0, 1)]
    seqs = seq_rows(spark, rows, max_len=5, max_windows=10)
    u = sorted((r for r in seqs.collect() if r["user_id"] == "u"), key=lambda r: r["window"])
    assert [r["window"] for r in u] == [0, 1, 2, 3]
    assert u[0]["item_idx"] == [7, 8, 9, 10, 11] and u[1]["item_idx"] == [5, 6, 7, 8, 9]
    assert u[3]["item_idx"] == [0, 2, 3, 4, 5]  # the oldest window is left-padded
    assert u[0]["test_item_idx"] == 11 and u[1]["test_item_idx"] is None
    batch = {
        f: tf.constant([r[f] for r in u]) for f in ("item_idx", "event_type_idx", "time_gap_bucket", "session_idx")
    }
    _, targets = split_view(batch, "train")
    got = sorted(int(t) for t in np.asarray(targets).ravel() if t > 0)
    assert got == list(range(3, 10))  # steps 2..8 (items 3..9) once; 10 and 11 are held out
    assert sequences.inference_rows(seqs).count() == 2
    capped = seq_rows(spark, rows, max_len=5, max_windows=2)
    assert sorted(r["window"] for r in capped.collect() if r["user_id"] == "u") == [0, 1]


def test_sequences_by_user_refuse_a_user_split_between_partitions(spark):
    """``by_user=True`` skips the shuffle; steps that are not whole users per partition are
    refused, not turned into two half rows for one user."""
    import pytest

    rows = [("u", f"i{k}", k, 1, 0, 2) for k in range(6)]
    voc = vocab.build_vocab(steps_of(spark, rows), min_count=1)
    steps = vocab.apply_vocab(steps_of(spark, rows), voc)
    split = steps.repartitionByRange(2, "step_no")  # steps 1-3 and 4-6 apart
    with pytest.raises(Exception, match="not all in one partition"):
        sequences.build_sequences(split, 4, 3, by_user=True).collect()
    whole = sequences.build_sequences(split, 4, 3).collect()  # shuffled by user first: one row
    assert [r["item_idx"] for r in whole] == [[4, 5, 6, 7]]


def test_sequences_by_user_refuse_a_user_whose_steps_come_out_of_order(spark):
    """``by_user=True`` also skips the sort: one user's steps in one partition but not in step
    order are refused, not turned into a window in the wrong order."""
    import pytest

    rows = [("u", f"i{k}", k, 1, 0, 2) for k in range(6)]
    voc = vocab.build_vocab(steps_of(spark, rows), min_count=1)
    steps = vocab.apply_vocab(steps_of(spark, rows), voc)
    backwards = steps.coalesce(1).sortWithinPartitions(F.desc("step_no"))
    with pytest.raises(Exception, match="not all in one partition, in order"):
        sequences.build_sequences(backwards, 4, 3, by_user=True).collect()
    in_order = sequences.build_sequences(steps.coalesce(1).sortWithinPartitions("step_no"), 4, 3, by_user=True)
    assert [r["item_idx"] for r in in_order.collect()] == [[4, 5, 6, 7]]
