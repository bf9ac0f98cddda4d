"""Per-user behaviour sequences: fixed-length, left-padded, aligned arrays plus held-out targets.

One row per user. ``item_idx`` holds the user's latest ``max_len`` steps, most recent last, 0 on
the left for padding (Petastorm needs fixed-length arrays). ``event_type_idx`` (1-based funnel
stage), ``time_gap_bucket`` and ``session_idx`` are aligned with it. The temporal leave-one-out
split is read off the same row: the last step is the test target, the one before it the
validation target, the rest is training history. The same rows serve inference (all steps), so
what the model sees in training is what it sees at night.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from interest.etl.sessions import by_whole_users, conform, flags_after
from interest.schema import SEQUENCE_FEATURES, window_stride

SEQUENCE_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType()),
        T.StructField("window", T.IntegerType(), nullable=False),
        *[
            T.StructField(name, T.ArrayType(T.IntegerType(), containsNull=name != "item_idx"), nullable=False)
            for name in SEQUENCE_FEATURES
        ],
        T.StructField("length", T.IntegerType(), nullable=False),
        T.StructField("n_steps", T.IntegerType(), nullable=False),
        T.StructField("n_events", T.LongType()),
        T.StructField("n_sessions", T.IntegerType(), nullable=False),
        T.StructField("last_ts", T.TimestampType()),
        T.StructField("valid_item_idx", T.IntegerType()),
        T.StructField("test_item_idx", T.IntegerType()),
        T.StructField("history_idx", T.ArrayType(T.IntegerType(), containsNull=False), nullable=False),
    ]
)  # what build_sequences returns (as Spark wrote it when it built them with array functions)
STEP_COLUMNS = ["user_id", "step_no", "item_idx", "event_rank", "time_gap_bucket", "session_idx", "n_events", "ts"]


def build_sequences(
    steps: DataFrame, max_len: int, min_train_steps: int, max_windows: int = 1, by_user: bool = False
) -> DataFrame:
    """Steps (with step_no, item_idx, time_gap_bucket, session_idx, event_rank) -> rows per user.

    ``window`` 0 is the latest ``max_len`` steps (the user's inference row, and the only window
    with held-out targets). With ``max_windows`` > 1, long histories also get older windows for
    training, ending ``max_len - 3`` steps apart: the training view of a window targets its steps
    except the first and the last two, so consecutive windows make every step a target once.

    Each user's steps are sorted by ``step_no`` (time, then arrival order; never an id) and
    turned into rows by :func:`sequences_of_users`. ``by_user``: every user's steps are already
    in one partition and in a row, in step order (as ``sessions.clean_steps`` leaves them), so
    no shuffle and no sort is needed; Spark cannot see that, so only a caller that made the
    steps that way may say so.
    """
    # by_user: the steps also come in order (clean_steps emits each user's steps in a row, by
    # step_no, and neither the cache nor the broadcast join of the vocabulary reorders them), so
    # they are not sorted again; sequences_of_users checks both and refuses otherwise
    ordered = (steps if by_user else steps.repartition("user_id").sortWithinPartitions("user_id", "step_no")).select(
        *STEP_COLUMNS
    )
    run = functools.partial(
        sequences_of_users, max_len=max_len, min_train_steps=min_train_steps, max_windows=max_windows, whole=by_user
    )
    return ordered.mapInArrow(lambda batches: by_whole_users(batches, run), SEQUENCE_SCHEMA)


def sequences_of_users(
    table: pa.Table, max_len: int, min_train_steps: int, max_windows: int, whole: bool = False
) -> pa.Table:
    """:func:`build_sequences` on whole users' steps, sorted by user and ``step_no`` (Arrow + NumPy).

    ``whole``: check that each user's steps come in a row numbered 1, 2, ... without a gap, as a
    user whose steps were split between partitions or out of order would not
    (``build_sequences(by_user=True)``)."""
    if not table.num_rows:
        return conform(pa.table({}), SEQUENCE_SCHEMA)
    col = {name: table.column(name).combine_chunks() for name in table.column_names}
    n = table.num_rows
    starts = np.flatnonzero(flags_after(col["user_id"]))  # [U] each user's first step
    sizes = np.diff(np.append(starts, n))  # [U]
    step_no = np.asarray(col["step_no"])
    if whole and np.any(step_no != np.arange(n) - np.repeat(starts, sizes) + 1):
        raise ValueError("build_sequences(by_user=True): a user's steps are not all in one partition, in order")
    stride = window_stride(max_len)
    extra = np.minimum(max_windows - 1, -(-np.maximum(sizes - max_len, 0) // stride))  # [U] older windows
    row_user = np.repeat(np.arange(len(starts)), extra + 1)  # [R]
    window = np.arange(len(row_user)) - np.repeat(np.cumsum(extra + 1) - (extra + 1), extra + 1)  # [R]
    end = sizes[row_user] - window * stride  # [R] how many of the user's steps the window ends after
    length = np.minimum(end, max_len)
    offset = end[:, None] - max_len + np.arange(max_len)[None, :]  # [R, max_len] step of the user, or < 0: padding
    at = np.where(offset >= 0, starts[row_user][:, None] + offset, -1)  # [R, max_len] row in the table

    def padded(values: np.ndarray) -> pa.Array:
        grid = np.where(at >= 0, values[np.maximum(at, 0)], 0).astype(np.int32)  # [R, max_len], 0 on the left
        return pa.ListArray.from_arrays(pa.array(np.arange(0, grid.size + 1, max_len, dtype=np.int32)), grid.ravel())

    item = np.asarray(col["item_idx"]).astype(np.int64)
    features = {
        "item_idx": item,
        "event_type_idx": np.asarray(col["event_rank"]).astype(np.int64) + 1,
        "time_gap_bucket": np.asarray(col["time_gap_bucket"]),
        "session_idx": np.asarray(col["session_idx"]),
    }
    last = starts + sizes - 1  # [U]
    held = (window == 0) & (sizes[row_user] >= min_train_steps)  # [R] the window with the targets
    # every item of the whole history (not only the window): what evaluation must not draw as a
    # negative, as in the SASRec protocol; sorted and distinct per user
    user_of_step = np.repeat(np.arange(len(starts)), sizes)
    span = int(item.max()) + 1
    pairs = np.unique(user_of_step * span + item)  # [P] (user, item), sorted
    history = pa.ListArray.from_arrays(
        pa.array(np.append(0, np.cumsum(np.bincount(pairs // span, minlength=len(starts)))), pa.int32()),
        pa.array(pairs % span, pa.int32()),
    )
    ts = col["ts"]
    last_ts = np.maximum.reduceat(np.asarray(ts.cast(pa.int64())), starts)
    out = {
        "user_id": col["user_id"].take(pa.array(starts[row_user])),
        "window": pa.array(window, pa.int32()),
        **{name: padded(values) for name, values in features.items()},
        "length": pa.array(length, pa.int32()),
        "n_steps": pa.array(sizes[row_user], pa.int32()),
        "n_events": pa.array(np.add.reduceat(np.asarray(col["n_events"]), starts)[row_user], pa.int64()),
        "n_sessions": pa.array(np.maximum.reduceat(features["session_idx"], starts)[row_user], pa.int32()),
        "last_ts": pa.array(last_ts[row_user], pa.int64()).cast(ts.type),
        "valid_item_idx": pa.array(item[last - 1][row_user], pa.int32(), mask=~held),
        "test_item_idx": pa.array(item[last][row_user], pa.int32(), mask=~held),
        "history_idx": history.take(pa.array(row_user)),
    }
    return conform(pa.table(out), SEQUENCE_SCHEMA)


def training_rows(sequences: DataFrame, min_train_steps: int) -> DataFrame:
    """Windows of users with enough history for train + validation + test targets."""
    return sequences.where(F.col("n_steps") >= min_train_steps)


def inference_rows(sequences: DataFrame) -> DataFrame:
    """One row per user: the latest window."""
    return sequences.where(F.col("window") == 0)


def with_older_windows(rows: DataFrame, sequences: DataFrame, windows: int) -> DataFrame:
    """Inference rows plus each user's older stored windows (1 to ``windows - 1`` before the
    latest) as ``older``: a list of (window, features) structs, null where the user has none. What
    an encoder that reads whole histories (memory's ``read_windows``) takes beside the latest
    window; ``sequences``: the date's stored windows (``train``)."""
    older = (
        sequences.where((F.col("window") > 0) & (F.col("window") < windows))
        .groupBy("user_id")
        .agg(F.collect_list(F.struct("window", *SEQUENCE_FEATURES)).alias("older"))
    )
    return rows.join(older, "user_id", "left")
