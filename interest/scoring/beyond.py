"""Beyond accuracy: what a list of recommendations looks like as a whole.

- **coverage@k**: the share of the catalogue's real items that appear in anyone's top k;
- **intra-list diversity**: per user, the mean over pairs of recommended items of how different
  their categories are (1 - Jaccard overlap of the category sets; with one category per item,
  the share of pairs in different categories), averaged over users;
- **novelty**: the mean self-information ``-log2 p(i)`` of the recommended items, with ``p(i)``
  the item's share of the training steps (an item never seen in training counts once);
- **slot purity** (multi-interest encoders): whether the K interest vectors separate categories,
  against the same assignment shuffled.

Pure NumPy; ``interest.evaluation`` feeds them the lists the embed job would publish.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from interest.schema import FIRST_ITEM


def coverage(recommended: np.ndarray, vocab_size: int) -> float:
    """recommended [N, k] item indices -> share of the real items recommended to anyone."""
    items = np.unique(recommended[recommended >= FIRST_ITEM])
    return float(len(items) / max(vocab_size - FIRST_ITEM, 1))


def intra_list_diversity(recommended: np.ndarray, cats: Sequence[frozenset[str]]) -> np.ndarray:
    """Per user [N]: mean pairwise category distance within the list (NaN where fewer than two
    recommended items have a category)."""
    out = np.full(len(recommended), np.nan)
    for n, row in enumerate(recommended):
        sets = [cats[i] for i in row.tolist() if FIRST_ITEM <= i < len(cats) and cats[i]]
        if len(sets) < 2:
            continue
        dist = [1.0 - len(a & b) / len(a | b) for i, a in enumerate(sets) for b in sets[i + 1 :]]
        out[n] = float(np.mean(dist))
    return out


def novelty(recommended: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per user [N]: mean self-information (bits) of their recommended items; ``counts`` [V] are
    the items' training step counts."""
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    info = -np.log2(counts / counts[FIRST_ITEM:].sum())  # [V]
    rec = np.asarray(recommended)
    valid = (rec >= FIRST_ITEM) & (rec < len(counts))
    values = np.where(valid, info[np.where(valid, rec, 0)], 0.0)
    return values.sum(1) / np.maximum(valid.sum(1), 1)


def slot_purity(
    assignment: Sequence[np.ndarray], items: Sequence[np.ndarray], cats: Sequence[frozenset[str]]
) -> np.ndarray:
    """Per user [N]: the share of their categorised history items that carry their slot's most
    common category. ``assignment`` per user gives each history item's slot (aligned with ``items``).
    One slot holding everything scores the history's top-category share; slots that each gather
    one interest score higher."""
    out = np.full(len(items), np.nan)
    for n, (slots, its) in enumerate(zip(assignment, items)):
        keep = [(int(s), cats[int(i)]) for s, i in zip(slots, its) if FIRST_ITEM <= int(i) < len(cats) and cats[int(i)]]
        if not keep:
            continue
        per_slot: dict[int, Counter[str]] = {}
        for s, c in keep:
            per_slot.setdefault(s, Counter()).update(c)
        majority = {s: counter.most_common(1)[0][0] for s, counter in per_slot.items()}
        out[n] = float(np.mean([majority[s] in c for s, c in keep]))
    return out
