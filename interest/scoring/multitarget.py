"""The multi-target protocol (ComiRec, KDD 2020): several future items per user, one list.

Each user's history is cut in time order: the first 80 % is what the model reads, the rest are
all targets (:func:`split_point`). The whole catalogue is ranked with the input's items removed,
and a list of the top N is scored against the set of targets:

- **Recall@N**: the share of the user's targets in the list (targets the vocabulary does not know
  stay in the denominator: they are misses, never dropped);
- **HR@N**: whether any target is in the list;
- **NDCG@N**: binary gains discounted by rank, over the best possible order of
  ``min(|targets|, N)`` hits;
- **Diversity@N**: the share of pairs in the list whose categories differ (ComiRec's measure,
  with an item's category label as it is stored, so MovieLens's "Action|Comedy" is one label).

A target the user already had in the input cannot be recommended (the input's items are removed)
and is no target: :func:`split_targets` drops it. Pure NumPy: ``benchmarks/multi_target.py``
trains and ranks; these rules score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from interest.schema import FIRST_ITEM

SHARE = 0.8  # of each history read as input


def split_point(n: int, share: float = SHARE) -> int:
    """How many of a history's ``n`` events are input: ``int(share * n)``, at least one input and
    one target (a history of one event has no target: 1)."""
    return max(1, min(int(share * n), n - 1)) if n > 1 else n


def split_targets(targets: Sequence[Sequence[int]], inputs: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Per user, the distinct targets (item indices; -1 for an item the vocabulary does not know),
    without the items already in the user's input, in first-seen order."""
    out = []
    for tgt, seen in zip(targets, inputs):
        have = set(int(i) for i in seen)
        kept: list[int] = []
        for t in (int(x) for x in tgt):
            if (t < 0 or t not in have) and (t < 0 or t not in kept):
                kept.append(t)
        out.append(np.asarray(kept, dtype=np.int64))
    return out


def target_metrics(lists: np.ndarray, targets: Sequence[np.ndarray], ks: Sequence[int]) -> dict[str, np.ndarray]:
    """lists [N, >= max(ks)] item indices best first (pad or -1 where nothing), targets per user
    (-1: unknown, a miss) -> per user [N] ``recall@k``, ``hr@k`` and ``ndcg@k`` for each k.
    A user without targets is NaN."""
    n = len(lists)
    out = {f"{m}@{k}": np.full(n, np.nan) for k in ks for m in ("recall", "hr", "ndcg")}
    discount = 1.0 / np.log2(np.arange(2, max(ks) + 2))  # [k]
    for u, (row, tgt) in enumerate(zip(lists, targets)):
        if not len(tgt):
            continue
        known = set(int(t) for t in tgt if t >= FIRST_ITEM)
        hit = np.array([int(i) in known for i in row[: max(ks)]], dtype=np.float64)  # [k]
        for k in ks:
            h = hit[:k]
            out[f"recall@{k}"][u] = h.sum() / len(tgt)
            out[f"hr@{k}"][u] = float(h.any())
            ideal = discount[: min(len(tgt), k)].sum()
            out[f"ndcg@{k}"][u] = float((h * discount[: len(h)]).sum() / ideal)
    return out


def category_diversity(lists: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """lists [N, >= k], codes [V] each item's category code (negative: none) -> per user [N] the
    share of pairs among the top k whose categories differ (NaN with fewer than two categorised)."""
    out = np.full(len(lists), np.nan)
    for u, row in enumerate(lists):
        items = row[:k]
        c = codes[items[(items >= FIRST_ITEM) & (items < len(codes))]]
        c = c[c >= 0]
        m = len(c)
        if m < 2:
            continue
        same = (np.unique(c, return_counts=True)[1] ** 2).sum() - m  # ordered pairs of equal categories
        out[u] = 1.0 - same / (m * (m - 1))
    return out
