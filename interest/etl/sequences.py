"""Per-user behaviour sequences: fixed-length, left-padded, aligned arrays plus held-out targets.

One row per user. ``item_idx`` holds the user's latest ``max_len`` steps, most recent last, 0 on
the left for padding (Petastorm needs fixed-length arrays). ``event_type_idx`` (1-based funnel
stage), ``time_gap_bucket`` and ``session_idx`` are aligned with it. The temporal leave-one-out
split is read off the same row: the last step is the test target, the one before it the
validation target, the rest is training history. The same rows serve inference (all steps), so
what the model sees in training is what it sees at night.
"""
from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

SEQUENCE_ARRAYS = ["item_idx", "event_type_idx", "time_gap_bucket", "session_idx"]


def _padded(window: Column, field: str, max_len: int) -> Column:
    values = F.transform(window, lambda x: x[field].cast("int"))
    pad = F.array_repeat(F.lit(0), F.lit(max_len) - F.size(window))
    return F.concat(pad, values)


def build_sequences(steps: DataFrame, max_len: int, min_train_steps: int) -> DataFrame:
    """Steps (with item_idx, time_gap_bucket, session_idx, event_rank) -> one row per user."""
    step = F.struct(
        F.col("ts").cast("double").alias("t"), "event_rank", "item_id", "item_idx",
        (F.col("event_rank") + 1).alias("event_type_idx"), "time_gap_bucket", "session_idx")
    grouped = steps.groupBy("user_id").agg(
        F.sort_array(F.collect_list(step)).alias("_steps"),
        F.sum("n_events").cast("long").alias("n_events"),
        F.countDistinct("session_idx").cast("int").alias("n_sessions"),
        F.max("ts").alias("last_ts"),
    )
    size = F.size("_steps")
    window = F.slice("_steps", F.greatest(size - max_len + 1, F.lit(1)), max_len)
    trainable = size >= min_train_steps
    return grouped.select(
        "user_id",
        *[_padded(window, name, max_len).alias(name) for name in SEQUENCE_ARRAYS],
        F.size(window).cast("int").alias("length"),
        size.cast("int").alias("n_steps"),
        "n_events",
        "n_sessions",
        "last_ts",
        F.when(trainable, F.element_at("_steps", -2)["item_idx"]).cast("int").alias("valid_item_idx"),
        F.when(trainable, F.element_at("_steps", -1)["item_idx"]).cast("int").alias("test_item_idx"),
        # every item of the whole history (not only the window): what evaluation must not draw
        # as a negative, as in the SASRec protocol
        F.array_sort(F.array_distinct(F.transform("_steps", lambda x: x["item_idx"].cast("int"))))
        .alias("history_idx"),
    )


def training_rows(sequences: DataFrame, min_train_steps: int) -> DataFrame:
    """Users with enough history for train + validation + test targets."""
    return sequences.where(F.col("n_steps") >= min_train_steps)
