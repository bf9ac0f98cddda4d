"""The facts every layer shares about sequences, in one module with no heavy imports.

Item indices: 0 pads, 1 is the unknown item, real items start at 2. A user's row stores the
window of their latest steps as aligned arrays (``SEQUENCE_FEATURES``); the temporal
leave-one-out split is a *view* of that window, never a copy:

- train: inputs are the window shifted right by ``SHIFT["train"]`` (3), targets the window shifted
  by 2 at every position, so the last two steps never train;
- valid: inputs shifted by 2, the target is the step at ``TARGET_POS["valid"]`` (-2);
- test: inputs shifted by 1, the target is the step at ``TARGET_POS["test"]`` (-1);
- infer: the window itself.

Older windows of long histories end ``WINDOW_STRIDE_OFFSET`` steps apart from max_len (stride
``max_len - 3``), so every step is a training target exactly once. ``HELD_OUT_STEPS`` is how many
of a user's last steps are validation and test, which the vocabulary counts skip.
"""

from __future__ import annotations

from typing import Literal, get_args

PAD, UNKNOWN, FIRST_ITEM = 0, 1, 2

# The encoder families; ``interest.models.encoders`` registers exactly these (a test checks), and
# config, jobs and reports take the names from here so they never need TensorFlow to know them.
EncoderName = Literal["self_attention", "hierarchical", "memory"]
StepFeature = Literal["event_type", "time_gap"]  # what a step carries beside its item
ENCODER_NAMES: tuple[str, ...] = get_args(EncoderName)

SEQUENCE_FEATURES: tuple[str, ...] = ("item_idx", "event_type_idx", "time_gap_bucket", "session_idx")

SHIFT: dict[str, int] = {"train": 3, "valid": 2, "test": 1, "infer": 0}
TARGET_POS: dict[str, int] = {"valid": -2, "test": -1}
HELD_OUT_STEPS = 2
# users with fewer steps hold nothing out: leave-one-out needs train + validation + test
MIN_TRAIN_STEPS = HELD_OUT_STEPS + 1
WINDOW_STRIDE_OFFSET = SHIFT["train"]  # windows end max_len - 3 steps apart


def window_stride(max_len: int) -> int:
    """Steps between the ends of a user's consecutive stored windows."""
    return max_len - WINDOW_STRIDE_OFFSET


def fresh_positions(windows: int, max_len: int) -> list[list[bool]]:
    """[C, L] where a user's stored windows (oldest first) hold a step for the first time: an
    older window's last ``WINDOW_STRIDE_OFFSET`` steps repeat the first of the next one, so only
    the newer copy counts. A step is fresh where this holds and its item is not padding."""
    return [[c == windows - 1 or j < max_len - WINDOW_STRIDE_OFFSET for j in range(max_len)] for c in range(windows)]


# Upper edges (seconds) of the time-gap buckets: bucket 1 is a session's first step, 2.. these
# intervals, the last one anything longer. Part of a model's input contract, so not configurable.
TIME_GAP_EDGES_S: tuple[float, ...] = (10, 60, 300, 1800, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400)
# Time-gap buckets: padding, first step of a session, one per edge interval, and beyond
N_GAP_BUCKETS = len(TIME_GAP_EDGES_S) + 3
