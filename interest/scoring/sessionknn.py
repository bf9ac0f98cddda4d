"""Session-kNN with reminders: the bar a session-aware model has to clear.

Latifi, Mauro & Jannach (2021) found that nearest neighbours over sessions, extended with the
user's own past sessions, beat the published session-aware neural models (HRNN, SHAN and their
successors). This is that baseline in the form this project evaluates:

- **V-SKNN**: the user's current session (the trailing steps that share the last step's
  ``session_idx``) is the query, each step weighted by its position (``p / m`` for the p-th of m
  steps, the latest weighs 1). Every training session is a set of items; a session's similarity to
  the query is the weighted overlap over ``sqrt(|session|)``. The ``neighbours`` most similar
  sessions vote for their items with their similarity.
- **Extend**: the user's previous session joins the query with weight ``extend``, which helps when
  the current session has one or two steps.
- **Reminders**: items of the user's own earlier sessions score ``1 / age`` (age in sessions back
  from the current one), added with weight ``reminders`` to the neighbours' votes (both scaled to
  a row maximum of 1). Popularity breaks the remaining ties.

Settings are picked on validation (:func:`fit_on_validation`), never on test. Pure NumPy and SciPy.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from interest.schema import FIRST_ITEM
from interest.scoring.tasks import best_on_validation

GRID_NEIGHBOURS = (20, 100, 500, 2000)
GRID_EXTEND = (0.0, 0.5)
GRID_REMINDERS = (0.0, 0.5, 2.0)


def split_sessions(items: np.ndarray, sessions: np.ndarray) -> list[np.ndarray]:
    """One user's steps (oldest first) cut where ``session_idx`` changes: each session's items."""
    items, sessions = np.asarray(items), np.asarray(sessions)
    if not len(items):
        return []
    cuts = np.flatnonzero(sessions[1:] != sessions[:-1]) + 1
    return np.split(items, cuts)


def _sparse_rows(weights: np.ndarray, items: np.ndarray, size: int) -> sparse.csr_matrix:
    """[B, L] weights at [B, L] item indices -> [B, size] (repeats add up; zero weights dropped)."""
    rows = np.broadcast_to(np.arange(len(items))[:, None], items.shape)
    ok = weights != 0
    return sparse.coo_matrix((weights[ok], (rows[ok], items[ok])), shape=(len(items), size)).tocsr()


def _keep_top(sim: sparse.csr_matrix, k: int) -> sparse.csr_matrix:
    """Each row's ``k`` largest entries; the rest set to 0 (ties at the cut: any of them)."""
    sim = sim.tocsr(copy=True)
    for r in range(sim.shape[0]):
        lo, hi = sim.indptr[r], sim.indptr[r + 1]
        if hi - lo > k:
            row = sim.data[lo:hi]
            row[np.argpartition(row, hi - lo - k)[: hi - lo - k]] = 0.0
    sim.eliminate_zeros()
    return sim


def _row_scaled(x: np.ndarray) -> np.ndarray:
    """Each row divided by its maximum (rows whose maximum is 0 stay 0)."""
    top = x.max(axis=1, keepdims=True)
    return np.divide(x, top, out=np.zeros_like(x), where=top > 0)


@dataclass
class SessionKNNScorer:
    """Scores [B, V] of histories from the training sessions (a binary [S, V] matrix)."""

    sessions: sparse.csr_matrix  # [S, V] 1 where the session holds the item
    popularity: np.ndarray  # [V] training steps per item, for ties
    neighbours: int = 100
    extend: float = 0.0
    reminders: float = 0.0
    name: str = "session-kNN"
    settings: dict | None = None
    rows_at_once: int = 128  # bounds the [B, S] similarities of a batch against many sessions
    _normed: sparse.csr_matrix = field(init=False, repr=False)  # [V, S] sessions over sqrt(length)

    def __post_init__(self) -> None:
        length = np.asarray(self.sessions.sum(axis=1)).ravel()  # [S]
        self._normed = (sparse.diags(1.0 / np.sqrt(np.maximum(length, 1.0))) @ self.sessions).T.tocsr()  # [V, S]

    @classmethod
    def fit(
        cls, items: Sequence[np.ndarray], sessions: Sequence[np.ndarray], vocab_size: int, **kw
    ) -> SessionKNNScorer:
        """The training sessions of every user (``training_sequences`` of ``item_idx`` and of
        ``session_idx``, aligned)."""
        rows, cols = [], []
        popularity = np.zeros(vocab_size)
        n = 0
        for user_items, user_sessions in zip(items, sessions):
            user_items = np.asarray(user_items, np.int64)
            known = (user_items >= FIRST_ITEM) & (user_items < vocab_size)
            np.add.at(popularity, user_items[known], 1.0)
            for session in split_sessions(user_items, user_sessions):
                distinct = np.unique(session[(session >= FIRST_ITEM) & (session < vocab_size)])
                if len(distinct):
                    rows.append(np.full(len(distinct), n))
                    cols.append(distinct)
                    n += 1
        r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        matrix = sparse.coo_matrix((np.ones(len(r)), (r, c)), shape=(n, vocab_size)).tocsr()  # [S, V]
        settings = {k: v for k, v in kw.items() if k in ("neighbours", "extend", "reminders")}
        return cls(matrix, popularity, settings=settings or None, **kw)

    def scores(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        n = len(inputs["item_idx"])
        parts = [
            self._scores({f: v[start : start + self.rows_at_once] for f, v in inputs.items()})
            for start in range(0, n, self.rows_at_once)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.sessions.shape[1]))

    def _scores(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        items = np.asarray(inputs["item_idx"], np.int64)  # [B, L], most recent last
        session = np.asarray(inputs["session_idx"], np.int64)  # [B, L]
        size = self.sessions.shape[1]
        real = (items >= FIRST_ITEM) & (items < size) & (session > 0)
        last = session[:, -1:]  # [B, 1] the current session
        current = real & (session == last)
        position = np.cumsum(current, axis=1)  # [B, L]
        weight = np.where(current, position / np.maximum(position[:, -1:], 1), 0.0)  # [B, L] p / m
        earlier = real & (session < last)
        previous = np.where(earlier, session, 0).max(axis=1, keepdims=True)  # [B, 1]
        weight = weight + np.where(earlier & (session == previous), self.extend, 0.0)
        safe = np.where(real, items, 0)
        query = _sparse_rows(weight, safe, size)  # [B, V]
        sim = _keep_top((query @ self._normed).tocsr(), self.neighbours)  # [B, S]
        votes = _row_scaled(np.asarray((sim @ self.sessions).todense()))  # [B, V]
        if self.reminders:
            age = np.where(earlier, last - session, 0)  # [B, L] sessions back
            recall = _sparse_rows(np.where(earlier, 1.0 / np.maximum(age, 1), 0.0), safe, size)
            votes = votes + self.reminders * _row_scaled(np.asarray(recall.todense()))
        prior = self.popularity / max(float(self.popularity.max()), 1.0)  # [V]
        out = votes + 1e-6 * prior[None, :]
        out[:, :FIRST_ITEM] = -np.inf
        return out


def fit_on_validation(
    items: Sequence[np.ndarray],
    sessions: Sequence[np.ndarray],
    vocab_size: int,
    validate,
    grid: dict[str, Sequence] | None = None,
) -> tuple[SessionKNNScorer, list[tuple[dict, float]]]:
    """Every setting of the grid on the same sessions; the one ``validate(scorer) -> float`` rates
    highest is kept. Returns it and every (settings, score) tried."""
    g = grid or {"neighbours": GRID_NEIGHBOURS, "extend": GRID_EXTEND, "reminders": GRID_REMINDERS}
    base = SessionKNNScorer.fit(items, sessions, vocab_size)

    def candidates():
        for neighbours, extend, reminders in itertools.product(g["neighbours"], g["extend"], g["reminders"]):
            settings = {"neighbours": neighbours, "extend": extend, "reminders": reminders}
            yield settings, SessionKNNScorer(base.sessions, base.popularity, settings=settings, **settings)

    return best_on_validation(candidates(), validate)
