"""Beyond one average: user segments, bootstrap intervals over users, and paired comparisons.

An average over every test user hides where a model wins. These helpers split targets into
segments (history length at the cut, drifting or steady interests), put a 95 % bootstrap interval
over users on each figure, and compare two scorers on the same users by the interval of their
paired per-user difference. Pure NumPy, no TensorFlow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from interest.schema import FIRST_ITEM

# History length at the cut (steps before the target): inclusive bounds, None = no upper bound.
HISTORY_BINS: tuple[tuple[int, int | None], ...] = ((1, 5), (6, 20), (21, 50), (51, 200), (201, None))
BOOTSTRAP_SAMPLES = 1000
CATEGORY_SEPARATOR = "|"  # an item in several categories (a film's genres) lists them joined by it


def bin_label(low: int, high: int | None) -> str:
    return f"{low}-{high}" if high is not None else f">{low - 1}"


def history_segment(history_len: np.ndarray) -> np.ndarray:
    """[N] steps before the target -> [N] labels ("1-5", "6-20", "21-50", "51-200", ">200"; "0"
    for none)."""
    n = np.asarray(history_len)
    out = np.full(len(n), "0", dtype=object)
    for low, high in HISTORY_BINS:
        inside = (n >= low) & (n <= high) if high is not None else n >= low
        out[inside] = bin_label(low, high)
    return out


MIN_SESSIONS = 3  # a multi-session user, for the session-aware segments


def session_segment(history_sessions: np.ndarray, target_session: np.ndarray) -> np.ndarray:
    """[N, L] the history's ``session_idx`` (most recent last), [N] the target's -> [N] labels:
    "within" (the target continues the history's last session) or "opens" (it starts a new one),
    for users with at least ``MIN_SESSIONS`` sessions up to the target (``session_idx`` counts a
    user's sessions from 1); "" for the others."""
    target = np.asarray(target_session)
    within = target == np.asarray(history_sessions)[:, -1]
    out = np.where(within, "within", "opens").astype(object)
    out[target < MIN_SESSIONS] = ""
    return out


def repeats(history_items: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """[N] whether the target is an item already in the history window (a re-visit)."""
    return (np.asarray(history_items) == np.asarray(targets)[:, None]).any(axis=1)


def category_sets(categories: Sequence[str | None]) -> list[frozenset[str]]:
    """Per item index, its categories: a category string split on ``|`` (empty when unknown)."""
    out: list[frozenset[str]] = []
    for c in categories:
        if c is None or (isinstance(c, float) and np.isnan(c)) or str(c) in ("", "<none>"):
            out.append(frozenset())
        else:
            out.append(frozenset(p for p in str(c).split(CATEGORY_SEPARATOR) if p))
    return out


def top_categories(items: np.ndarray, cats: Sequence[frozenset[str]], n: int = 2) -> list[str]:
    """The ``n`` categories most frequent among a history's real items (each item counts once per
    category it is in); ties go to the name that sorts first."""
    counts: Counter[str] = Counter()
    for i in np.asarray(items).tolist():
        if FIRST_ITEM <= i < len(cats):
            counts.update(cats[i])
    return [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def drift_segment(inputs: np.ndarray, targets: np.ndarray, cats: Sequence[frozenset[str]]) -> np.ndarray:
    """[N] "drifting" (the target is in none of the history's top two categories), "steady", or
    "unknown" (the target or the whole history has no category). inputs [N, L], targets [N]."""
    out = np.full(len(targets), "unknown", dtype=object)
    for n, (items, target) in enumerate(zip(inputs, targets)):
        wanted = cats[target] if FIRST_ITEM <= target < len(cats) else frozenset()
        top = top_categories(items, cats)
        if wanted and top:
            out[n] = "steady" if wanted & set(top) else "drifting"
    return out


def per_user(values: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Mean of each user's targets, in order of the users' first target: [N] -> [U]. A user with
    several targets (a week of them) weighs as much as a user with one."""
    _, first, inverse = np.unique(users, return_index=True, return_inverse=True)
    sums = np.bincount(inverse, weights=np.asarray(values, dtype=np.float64))
    counts = np.bincount(inverse)
    return (sums / counts)[np.argsort(first, kind="stable")] if len(values) else np.zeros(0)


def bootstrap_interval(
    values: np.ndarray, level: float = 0.95, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one per user), resampling users."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    chunk = max(1, 2_000_000 // len(values))  # bounded memory: [chunk, N] indices at a time
    for start in range(0, samples, chunk):
        stop = min(start + chunk, samples)
        means[start:stop] = values[rng.integers(0, len(values), size=(stop - start, len(values)))].mean(1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


def estimate(values: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """{"mean", "lo", "hi", "n"}: the mean of per-user values and its 95 % bootstrap interval."""
    lo, hi = bootstrap_interval(values, seed=seed)
    return {"mean": float(np.mean(values)) if len(values) else float("nan"), "lo": lo, "hi": hi, "n": len(values)}


def paired_difference(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """``a - b`` per user (the same users in the same order): mean and 95 % bootstrap interval. The
    difference is real where the interval excludes 0."""
    return estimate(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), seed=seed)


def format_estimate(e: dict[str, Any], digits: int = 3) -> str:
    """``0.741 [0.713, 0.768]``: a mean and its interval."""
    if not e.get("n"):
        return "–"
    return f"{e['mean']:.{digits}f} [{e['lo']:.{digits}f}, {e['hi']:.{digits}f}]"
