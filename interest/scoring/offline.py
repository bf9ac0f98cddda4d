"""Scoring a split's targets offline: an encoder's or the popularity prior's metrics on the
leave-one-out valid or test targets of numpy rows (what validation and the training report use).
The pieces are in ``interest.scoring.tasks`` and ``interest.scoring.metrics``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from interest.models.encoders import Encoder
from interest.scoring.metrics import summarize
from interest.scoring.tasks import EncoderScorer, PopularityScorer, Scorer, leave_one_out, rank_task


def evaluate_with(
    scorer: Scorer, rows: dict[str, np.ndarray], split: str, vocab_size: int, k: int, negatives: int, seeds
) -> dict[str, Any]:
    """Metrics of ``scorer`` on the valid or test targets of ``rows``."""
    return summarize(rank_task(scorer, leave_one_out(rows, split), vocab_size, negatives, tuple(seeds)), k)


def test_metrics(
    scorer: Scorer, rows: dict[str, np.ndarray], vocab_size: int, k: int, negatives: int, seeds
) -> dict[str, dict[str, Any]]:
    """The test targets of ``rows`` ranked once, summarised two ways: ``test`` leaves the targets
    the vocabulary does not know out, ``test_counted`` counts them as misses (the field's form:
    the item exists, the model never learned it)."""
    ranks = rank_task(scorer, leave_one_out(rows, "test"), vocab_size, negatives, tuple(seeds))
    return {"test": summarize(ranks, k), "test_counted": summarize(ranks, k, counted=True)}


def evaluate_split(
    encoder: Encoder,
    rows: dict[str, np.ndarray],
    split: str,
    k: int = 10,
    negatives: int = 100,
    seeds: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Metrics of the encoder on the valid or test targets of ``rows``."""
    scorer = EncoderScorer(encoder.kind, encoder)
    return evaluate_with(scorer, rows, split, int(encoder.args["vocab_size"]), k, negatives, seeds)


def evaluate_popularity(
    rows: dict[str, np.ndarray],
    item_counts: np.ndarray,
    split: str,
    k: int = 10,
    negatives: int = 100,
    seeds: tuple[int, ...] = (),
) -> dict[str, Any]:
    """The popularity baseline: every user gets the same scores, the items' step counts."""
    return evaluate_with(PopularityScorer(item_counts), rows, split, len(item_counts), k, negatives, seeds)
