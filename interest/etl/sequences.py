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

from interest.schema import SEQUENCE_FEATURES, TARGET_POS, window_stride


def _padded(window: Column, field: str, max_len: int) -> Column:
    values = F.transform(window, lambda x: x[field].cast("int"))
    pad = F.array_repeat(F.lit(0), F.lit(max_len) - F.size(window))
    return F.concat(pad, values)


def build_sequences(steps: DataFrame, max_len: int, min_train_steps: int, max_windows: int = 1) -> DataFrame:
    """Steps (with step_no, item_idx, time_gap_bucket, session_idx, event_rank) -> rows per user.

    ``window`` 0 is the latest ``max_len`` steps (the user's inference row, and the only window
    with held-out targets). With ``max_windows`` > 1, long histories also get older windows for
    training, ending ``max_len - 3`` steps apart: the training view of a window targets its steps
    except the first and the last two, so consecutive windows make every step a target once.
    """
    step = F.struct(  # step_no first: the sort key (time, then arrival order; never an id)
        "step_no", "item_idx", (F.col("event_rank") + 1).alias("event_type_idx"), "time_gap_bucket", "session_idx"
    )
    grouped = steps.groupBy("user_id").agg(
        F.sort_array(F.collect_list(step)).alias("_steps"),
        F.sum("n_events").cast("long").alias("n_events"),
        # sessions are numbered 1.. per user, so the highest is their count: a countDistinct here
        # would make Spark expand the rows and aggregate twice, with a second shuffle
        F.max("session_idx").cast("int").alias("n_sessions"),
        F.max("ts").alias("last_ts"),
    )
    size = F.size("_steps")
    stride = window_stride(max_len)
    extra = F.least(F.lit(max_windows - 1), F.ceil(F.greatest(size - max_len, F.lit(0)) / F.lit(stride)).cast("int"))
    grouped = grouped.withColumn("window", F.explode(F.sequence(F.lit(0), extra)))
    end = size - F.col("window") * stride  # 1-based index of the window's last step
    window = F.slice("_steps", F.greatest(end - max_len + 1, F.lit(1)), F.least(end, F.lit(max_len)))
    trainable = size >= min_train_steps
    latest = F.col("window") == 0
    return grouped.select(
        "user_id",
        F.col("window").cast("int").alias("window"),
        *[_padded(window, name, max_len).alias(name) for name in SEQUENCE_FEATURES],
        F.size(window).cast("int").alias("length"),
        size.cast("int").alias("n_steps"),
        "n_events",
        "n_sessions",
        "last_ts",
        *[
            F.when(trainable & latest, F.element_at("_steps", TARGET_POS[split])["item_idx"])
            .cast("int")
            .alias(f"{split}_item_idx")
            for split in ("valid", "test")
        ],
        # every item of the whole history (not only the window): what evaluation must not draw
        # as a negative, as in the SASRec protocol
        F.array_sort(F.array_distinct(F.transform("_steps", lambda x: x["item_idx"].cast("int")))).alias("history_idx"),
    )


def training_rows(sequences: DataFrame, min_train_steps: int) -> DataFrame:
    """Windows of users with enough history for train + validation + test targets."""
    return sequences.where(F.col("n_steps") >= min_train_steps)


def inference_rows(sequences: DataFrame) -> DataFrame:
    """One row per user: the latest window."""
    return sequences.where(F.col("window") == 0)
