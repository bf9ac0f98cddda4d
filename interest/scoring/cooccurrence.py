"""Item-to-item co-occurrence: the strong baseline without attention.

Counts, over the training steps, how often item j follows item i within ``span`` steps (closer
pairs count more: 1 / distance), normalises the counts cosine-style (``C_ij / sqrt(n_i n_j)``, so
popular items do not win every row), and scores a user by the rows of their ``last`` items, the
most recent weighted most (``decay`` per step back). This is item-based collaborative filtering on
sequences, the method attention has to beat where it claims to: it knows which items go together
but not which part of a history matters now. Settings are picked on validation
(:func:`fit_on_validation`), never on test.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from interest.schema import FIRST_ITEM
from interest.scoring.tasks import best_on_validation

# The grid :func:`fit_on_validation` searches (span, last, decay, symmetric): small enough to run
# in seconds at 20,000 users.
GRID_SPAN = (1, 3, 10)
GRID_LAST = (1, 3, 10)
GRID_DECAY = (0.5, 0.9)
GRID_SYMMETRIC = (False, True)


@dataclass
class CoOccurrenceScorer:
    """Scores [B, V] of histories from a normalised item-item matrix [V, V]."""

    matrix: sparse.csr_matrix
    last: int = 3
    decay: float = 0.5
    name: str = "co-occurrence"
    settings: dict | None = None

    @classmethod
    def fit(
        cls, sequences: Sequence[np.ndarray], vocab_size: int, span: int = 3, symmetric: bool = False, **kw
    ) -> CoOccurrenceScorer:
        """Count pairs within ``span`` steps of each training sequence (item indices, oldest first)."""
        rows, cols, weights = [], [], []
        for seq in sequences:
            seq = np.asarray(seq, dtype=np.int64)
            for d in range(1, span + 1):
                if len(seq) <= d:
                    break
                a, b = seq[:-d], seq[d:]
                ok = (a >= FIRST_ITEM) & (b >= FIRST_ITEM) & (a != b) & (a < vocab_size) & (b < vocab_size)
                rows.append(a[ok])
                cols.append(b[ok])
                weights.append(np.full(int(ok.sum()), 1.0 / d))
        r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        w = np.concatenate(weights) if weights else np.zeros(0)
        counts = sparse.coo_matrix((w, (r, c)), shape=(vocab_size, vocab_size)).tocsr()  # [V, V]
        if symmetric:
            counts = counts + counts.T
        occurrences = np.zeros(vocab_size)
        for seq in sequences:
            seq = np.asarray(seq, dtype=np.int64)
            seq = seq[(seq >= FIRST_ITEM) & (seq < vocab_size)]
            np.add.at(occurrences, seq, 1.0)
        inv = sparse.diags(1.0 / np.sqrt(np.maximum(occurrences, 1.0)))
        matrix = (inv @ counts @ inv).tocsr()
        settings = {"span": span, "symmetric": symmetric, **kw}
        return cls(matrix, settings=settings, **kw)

    def scores(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        items = np.asarray(inputs["item_idx"])[:, -self.last :]  # [B, m], most recent last
        b, m = items.shape
        age = np.arange(m - 1, -1, -1)  # steps back from the latest
        weight = np.broadcast_to(self.decay**age, (b, m))
        ok = (items >= FIRST_ITEM) & (items < self.matrix.shape[0])
        rows = np.broadcast_to(np.arange(b)[:, None], (b, m))
        picked = sparse.coo_matrix((weight[ok], (rows[ok], items[ok])), shape=(b, self.matrix.shape[0])).tocsr()
        out = (picked @ self.matrix).toarray()  # [B, V]
        out[:, :FIRST_ITEM] = -np.inf
        return out


def fit_on_validation(
    sequences: Sequence[np.ndarray],
    vocab_size: int,
    validate,
    grid: dict[str, Sequence] | None = None,
) -> tuple[CoOccurrenceScorer, list[tuple[dict, float]]]:
    """Fit every setting of the grid, keep the one ``validate(scorer) -> float`` rates highest
    (validation HR@10 against sampled negatives, say). Returns the best scorer and every
    (settings, score) tried."""
    g = grid or {"span": GRID_SPAN, "last": GRID_LAST, "decay": GRID_DECAY, "symmetric": GRID_SYMMETRIC}
    fitted = {
        (span, symmetric): CoOccurrenceScorer.fit(sequences, vocab_size, span=span, symmetric=symmetric)
        for span, symmetric in itertools.product(g["span"], g["symmetric"])
    }

    def candidates():
        for (span, symmetric), base in fitted.items():
            for last, decay in itertools.product(g["last"], g["decay"]):
                settings = {"span": span, "symmetric": symmetric, "last": last, "decay": decay}
                yield settings, CoOccurrenceScorer(base.matrix, last=last, decay=decay, settings=settings)

    return best_on_validation(candidates(), validate)
