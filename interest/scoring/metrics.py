"""Ranking metrics for next-item prediction: HR@K, NDCG@K and MRR, full or with sampled negatives.

One definition of the candidates everywhere (evaluation, validation, the embed job's
recommendations): the target is ranked among the real items (pad and unknown excluded) that the
user never interacted with, the target itself always included. Full ranking ranks it among all of
them; sampled ranking (the SASRec paper's protocol) among ``n`` distinct negatives drawn uniformly
from them. Ties count against the target, so a model that scores everything the same gets no
credit. Targets that are not real items cannot be ranked: the summary leaves them out and counts
them (``excluded_targets``), and :class:`TargetRanks` can also count them as misses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from interest.schema import FIRST_ITEM


def rank_full(scores: np.ndarray, targets: np.ndarray, seen=None) -> np.ndarray:
    """scores [N, V], targets [N] -> 0-based rank of each target among the candidates [N].

    The candidates are the real items (>= FIRST_ITEM) minus those in ``seen`` (per user, the items
    they interacted with: [N, L] padded or a list of arrays), the target itself always included.
    Targets must be real items: an unknown or padding target is not among the ranked items, and its
    "rank" would come out one place too good, or -1.
    """
    _check_targets(targets)
    s = np.asarray(scores, dtype=np.float64)[:, FIRST_ITEM:]
    t = s[np.arange(len(targets)), targets - FIRST_ITEM][:, None]  # [N, 1]
    above = (s > t).sum(1) + (s == t).sum(1) - 1  # [N]
    if seen is not None:  # a seen item that outranks (or ties) the target is no competitor
        rows, cols = _seen_pairs(seen, targets, s.shape[1])
        beaten = s[rows, cols] >= t[rows, 0]
        above = above - np.bincount(rows[beaten], minlength=len(targets))
    return above


def _seen_pairs(seen, targets: np.ndarray, n_real: int) -> tuple[np.ndarray, np.ndarray]:
    """(user row, real-item column) of each distinct seen item other than the user's target."""
    hist = [np.unique(np.asarray(h, dtype=np.int64)) for h in seen]
    rows = np.repeat(np.arange(len(hist)), [len(h) for h in hist])
    cols = (np.concatenate(hist) if hist else np.zeros(0, np.int64)) - FIRST_ITEM
    keep = (cols >= 0) & (cols < n_real) & (cols != targets[rows] - FIRST_ITEM)
    return rows[keep], cols[keep]


def _check_targets(targets: np.ndarray) -> None:
    if len(targets) and int(np.min(targets)) < FIRST_ITEM:
        raise ValueError(
            f"targets must be real items (index >= {FIRST_ITEM}); filter unknown "
            "targets out first (evaluate_scores does, and counts them)"
        )


def sample_negatives(histories, targets: np.ndarray, vocab_size: int, n: int, seed: int) -> np.ndarray:
    """[N, n] distinct items the user never interacted with (nor the target), uniform over real
    items without replacement. A user with fewer than ``n`` such items gets all of them, the row
    padded with -1 (no candidate): one such user leaves the protocol as it is for everyone else.

    ``histories``: per user, the items to avoid ([N, L] padded windows or a list of arrays).
    """
    rng = np.random.default_rng(seed)
    out = np.empty((len(targets), n), dtype=np.int64)
    for i, (hist, target) in enumerate(zip(histories, targets)):
        hist = np.asarray(hist)
        seen = set(hist[hist >= FIRST_ITEM].tolist()) | {int(target)}
        if vocab_size - FIRST_ITEM - len(seen) < n:
            unseen = rng.permutation(np.setdiff1d(np.arange(FIRST_ITEM, vocab_size), list(seen)))
            out[i] = np.pad(unseen, (0, n - len(unseen)), constant_values=-1)
            continue
        picked: dict[int, None] = {}  # insertion-ordered set: deterministic for a seed
        while len(picked) < n:
            for x in rng.integers(FIRST_ITEM, vocab_size, size=2 * n).tolist():
                if x not in seen and x not in picked:
                    picked[x] = None
                    if len(picked) == n:
                        break
        out[i] = list(picked)
    return out


def rank_sampled(scores: np.ndarray, targets: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """scores [N, V], targets [N], negatives [N, n] (-1: no candidate) -> rank of the target among
    its negatives and itself [N]."""
    rows = np.arange(len(targets))[:, None]
    t = scores[rows[:, 0], targets][:, None]
    neg = scores[rows, np.maximum(negatives, 0)]
    return ((neg >= t) & (negatives >= 0)).sum(1)


def metric_values(ranks: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per target: hit (rank < k), NDCG@k and reciprocal rank; a rank of -1 (not ranked) is a miss.
    ranks [...] -> {"hr", "ndcg", "mrr"}: arrays of the same shape."""
    ranks = np.asarray(ranks)
    ranked = ranks >= 0
    hit = ranked & (ranks < k)
    safe = np.where(ranked, ranks, 0)
    return {
        "hr": hit.astype(np.float64),
        "ndcg": np.where(hit, 1.0 / np.log2(safe + 2.0), 0.0),
        "mrr": np.where(ranked, 1.0 / (safe + 1.0), 0.0),
    }


@dataclass
class Ranking:
    """Metrics from ranks; ``k`` is the cut-off for HR and NDCG."""

    hr: float
    ndcg: float
    mrr: float
    users: int

    @classmethod
    def from_ranks(cls, ranks: np.ndarray, k: int = 10) -> Ranking:
        m = metric_values(ranks, k)
        return cls(float(m["hr"].mean()), float(m["ndcg"].mean()), float(m["mrr"].mean()), int(len(ranks)))

    def as_dict(self, k: int, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}hr@{k}": self.hr, f"{prefix}ndcg@{k}": self.ndcg, f"{prefix}mrr": self.mrr}


@dataclass(frozen=True)
class TargetRanks:
    """Every target's rank under one scorer: what the averages, the segments and the bootstrap
    intervals are all computed from. A target that is not a real item has rank -1 (not ranked)."""

    full: np.ndarray  # [N] rank among every candidate
    sampled: np.ndarray  # [S, N] rank among the target and the negatives of each seed
    ranked: np.ndarray  # [N] bool: the target is a real item
    seeds: tuple[int, ...]
    note: str | None = None  # why sampled ranks are missing or fewer (a catalogue too small for the protocol)

    def values(self, k: int, counted: bool = False) -> dict[str, np.ndarray]:
        """Per-target metrics {"full_hr", "full_ndcg", "full_mrr", "sampled_hr", ...}: over the
        ranked targets only, or (``counted``) over all of them with the unranked ones as misses.
        Sampled values are the mean over the negative seeds."""
        keep = slice(None) if counted else self.ranked
        out = {f"full_{name}": v[keep] for name, v in metric_values(self.full, k).items()}
        if self.seeds:
            for name, v in metric_values(self.sampled, k).items():
                out[f"sampled_{name}"] = v.mean(0)[keep]
        return out

    def subset(self, mask: np.ndarray) -> TargetRanks:
        return TargetRanks(self.full[mask], self.sampled[:, mask], self.ranked[mask], self.seeds, self.note)


def rank_targets(
    score_fn: Callable[[int, int], np.ndarray],
    histories,
    targets: np.ndarray,
    vocab_size: int,
    negatives: int = 100,
    seeds: tuple[int, ...] = (),
    batch: int = 1024,
) -> TargetRanks:
    """Rank every target among the user's candidates: all of them, and ``negatives`` drawn per seed.

    ``score_fn(start, stop)`` returns scores [stop - start, V] for those users; ``histories`` holds
    per user the items they interacted with (never candidates, never drawn as negatives).
    """
    targets = np.asarray(targets)
    keep = targets >= FIRST_ITEM  # [N]
    kept_histories = [h for h, ok in zip(histories, keep) if ok]
    note: str | None = None
    negs = {s: sample_negatives(kept_histories, targets[keep], vocab_size, negatives, s) for s in seeds}
    short = int((negs[seeds[0]] < 0).any(1).sum()) if seeds else 0
    if seeds and short == len(kept_histories):  # a catalogue too small for the protocol: full ranking only
        seeds, negs, note = (), {}, f"sampled metrics omitted: too few unseen items to sample {negatives} negatives"
    elif short:
        note = f"{short} user(s) with fewer than {negatives} unseen items ranked among all of theirs"
    full = np.full(len(targets), -1, np.int64)
    sampled = np.full((len(seeds), len(targets)), -1, np.int64)
    done = 0  # kept users ranked so far: their offset into the negatives
    for start in range(0, len(targets), batch):
        stop = min(start + batch, len(targets))
        rows = np.flatnonzero(keep[start:stop])
        if not len(rows):
            continue
        scores = score_fn(start, stop)[rows]
        t = targets[start + rows]
        full[start + rows] = rank_full(scores, t, [histories[start + r] for r in rows])
        for i, s in enumerate(seeds):
            sampled[i, start + rows] = rank_sampled(scores, t, negs[s][done : done + len(t)])
        done += len(t)
    return TargetRanks(full, sampled, keep, tuple(seeds), note)


# Full-ranking cut-offs reported beside ``k``: published figures give HR and NDCG at 10 and 20
ALSO_AT = (20,)


def summarize(ranks: TargetRanks, k: int = 10, counted: bool = False) -> dict[str, Any]:
    """The averages of :class:`TargetRanks`: full-ranking metrics (at ``k`` and at ``ALSO_AT``),
    sampled metrics (mean and std over the negative seeds), ``users`` ranked and
    ``excluded_targets``. ``counted``: over every target, the unknown ones as misses."""
    if not ranks.ranked.any():
        raise ValueError(f"no target is a real item ({len(ranks.ranked)} users, all unknown): nothing to rank")
    keep = slice(None) if counted else ranks.ranked
    out: dict[str, Any] = dict(Ranking.from_ranks(ranks.full[keep], k).as_dict(k, "full_"))
    for cut in (c for c in ALSO_AT if c != k):
        at = Ranking.from_ranks(ranks.full[keep], cut)
        out.update({f"full_hr@{cut}": at.hr, f"full_ndcg@{cut}": at.ndcg})
    if ranks.seeds:
        per_seed = [Ranking.from_ranks(r[keep], k) for r in ranks.sampled]
        out.update(
            {
                f"sampled_hr@{k}": float(np.mean([r.hr for r in per_seed])),
                f"sampled_ndcg@{k}": float(np.mean([r.ndcg for r in per_seed])),
                "sampled_mrr": float(np.mean([r.mrr for r in per_seed])),
                f"sampled_hr@{k}_std": float(np.std([r.hr for r in per_seed])),
                f"sampled_ndcg@{k}_std": float(np.std([r.ndcg for r in per_seed])),
            }
        )
    if ranks.note:
        out["sampled_note"] = ranks.note
    out["users"] = int(ranks.ranked.sum())
    out["excluded_targets"] = int((~ranks.ranked).sum())
    return out


def evaluate_scores(
    score_fn: Callable[[int, int], np.ndarray],
    histories,
    targets: np.ndarray,
    vocab_size: int,
    k: int = 10,
    negatives: int = 100,
    seeds: tuple[int, ...] = (),
    batch: int = 1024,
) -> dict[str, Any]:
    """Full-ranking metrics, plus sampled-negative metrics averaged over ``seeds``.

    ``score_fn(start, stop)`` returns scores [stop - start, V] for those users. Users whose target
    is not a real item (unknown: rare or first seen in a held-out step) cannot be ranked: they are
    left out of every metric and counted in ``excluded_targets``.
    """
    return summarize(rank_targets(score_fn, histories, targets, vocab_size, negatives, seeds, batch), k)
