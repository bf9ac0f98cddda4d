"""Whole stored histories: every window of a user, oldest first, each step marked fresh once."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from interest.data.files import stored_windows
from interest.schema import SEQUENCE_FEATURES, WINDOW_STRIDE_OFFSET, window_stride

L = 8


def _windows(steps: list[int]) -> list[list[int]]:
    """A history's stored windows as sessionize lays them out: newest first, left-padded, each
    ending ``window_stride(L)`` steps before the next."""
    out, end = [], len(steps)
    while end > 0:
        part = steps[max(0, end - L) : end]
        out.append([0] * (L - len(part)) + part)
        if end - L <= 0:
            break
        end -= window_stride(L)
    return out


def test_every_window_oldest_first_and_each_step_fresh_once(tmp_path):
    histories = {"u1": list(range(2, 16)), "u3": list(range(20, 25))}  # 14 steps: 3 windows; 5: one
    rows = []
    for user, steps in histories.items():
        for w, items in enumerate(_windows(steps)):
            rows.append({"user_id": user, "window": w, **{f: items for f in SEQUENCE_FEATURES}})
    rows.append({"user_id": "u9", "window": 0, **{f: [0] * (L - 1) + [99] for f in SEQUENCE_FEATURES}})
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "part.parquet")

    feats, fresh = stored_windows(str(tmp_path), np.array(["u1", "u2", "u3"]))  # u2 has none, u9 not asked
    items = feats["item_idx"]
    assert items.shape == (3, 3, L) and fresh.shape == (3, 3, L)
    for row, user in enumerate(["u1", "u2", "u3"]):
        written = items[row][fresh[row]].tolist()  # oldest window first, each step once
        assert written == histories.get(user, []), user
    assert items[2, :2].sum() == 0  # u3 has no older windows: padding
    assert not fresh[0, 0, L - WINDOW_STRIDE_OFFSET :].any()  # the repeated steps of the older window
