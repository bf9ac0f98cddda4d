"""Scoring a split's targets offline: user vectors from an encoder, or the popularity prior,
ranked against the full catalogue and against sampled negatives (see ``interest.scoring.metrics``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from interest.data.reader import split_view
from interest.models.encoders import Encoder
from interest.schema import SEQUENCE_FEATURES, TARGET_POS
from interest.scoring.metrics import evaluate_scores


def encode(encoder: Encoder, rows: dict[str, np.ndarray], split: str, batch: int = 512) -> np.ndarray:
    """User vectors [N, D] of numpy rows for a split view (valid/test/infer)."""
    out = []
    n = len(rows["item_idx"])
    for start in range(0, n, batch):
        chunk = {k: tf.constant(v[start : start + batch]) for k, v in rows.items() if k in SEQUENCE_FEATURES}
        inputs, _ = split_view(chunk, split)
        out.append(encoder.infer(inputs)["user"])
    return np.concatenate(out) if out else np.zeros((0, encoder.dim), np.float32)


def _evaluate_targets(
    rows: dict[str, np.ndarray],
    split: str,
    score_fn: Callable[[int, int], np.ndarray],
    vocab_size: int,
    k: int,
    negatives: int,
    seeds: tuple[int, ...],
) -> dict[str, Any]:
    """Rank the ``split`` targets of ``rows`` (valid or test) with ``score_fn``, never drawing a
    negative from the user's whole history."""
    targets = rows["item_idx"][:, TARGET_POS[split]].astype(np.int64)  # [N]
    histories = rows.get("history_idx", rows["item_idx"])
    return evaluate_scores(score_fn, histories, targets, vocab_size, k=k, negatives=negatives, seeds=seeds)


def evaluate_split(
    encoder: Encoder,
    rows: dict[str, np.ndarray],
    split: str,
    k: int = 10,
    negatives: int = 100,
    seeds: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Metrics of the encoder on the valid or test targets of ``rows``."""
    users = encode(encoder, rows, split)  # [N, D]
    table = encoder.item_table.numpy()  # [V, D]
    return _evaluate_targets(rows, split, lambda a, b: users[a:b] @ table.T, table.shape[0], k, negatives, seeds)


def evaluate_popularity(
    rows: dict[str, np.ndarray],
    item_counts: np.ndarray,
    split: str,
    k: int = 10,
    negatives: int = 100,
    seeds: tuple[int, ...] = (),
) -> dict[str, Any]:
    """The popularity baseline: every user gets the same scores, the items' step counts."""
    pop = item_counts.astype(np.float64) + np.linspace(0, 1e-3, len(item_counts))  # stable ties, [V]
    return _evaluate_targets(
        rows, split, lambda a, b: np.broadcast_to(pop, (b - a, len(pop))), len(item_counts), k, negatives, seeds
    )
