"""Ranking metrics for next-item prediction: HR@K, NDCG@K and MRR, full or with sampled negatives.

Full ranking ranks the target among every real item (pad and unknown excluded). Sampled ranking
(the SASRec paper's protocol) ranks it among ``n`` distinct negatives drawn uniformly from the
items the user never interacted with. Targets that are not real items are excluded and counted.
Ties count against the target, so a model that scores everything the same gets no credit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from interest.schema import FIRST_ITEM


def rank_full(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """scores [N, V], targets [N] -> 0-based rank of each target among real items [N].

    Targets must be real items (>= FIRST_ITEM): an unknown or padding target is not among the
    ranked items, and its "rank" would come out one place too good, or -1.
    """
    _check_targets(targets)
    s = scores[:, FIRST_ITEM:]
    t = scores[np.arange(len(targets)), targets][:, None]
    return (s > t).sum(1) + (s == t).sum(1) - 1


def _check_targets(targets: np.ndarray) -> None:
    if len(targets) and int(np.min(targets)) < FIRST_ITEM:
        raise ValueError(
            f"targets must be real items (index >= {FIRST_ITEM}); filter unknown "
            "targets out first (evaluate_scores does, and counts them)"
        )


def sample_negatives(histories, targets: np.ndarray, vocab_size: int, n: int, seed: int) -> np.ndarray:
    """[N, n] distinct items the user never interacted with (nor the target), uniform over real
    items without replacement.

    ``histories``: per user, the items to avoid ([N, L] padded windows or a list of arrays).
    """
    rng = np.random.default_rng(seed)
    out = np.empty((len(targets), n), dtype=np.int64)
    for i, (hist, target) in enumerate(zip(histories, targets)):
        hist = np.asarray(hist)
        seen = set(hist[hist >= FIRST_ITEM].tolist()) | {int(target)}
        if vocab_size - FIRST_ITEM - len(seen) < n:
            raise ValueError(f"too few unseen items to sample {n} negatives for a user")
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
    """scores [N, V], targets [N], negatives [N, n] -> rank of the target among n + 1 [N]."""
    rows = np.arange(len(targets))[:, None]
    t = scores[rows[:, 0], targets][:, None]
    neg = scores[rows, negatives]
    return (neg > t).sum(1) + (neg == t).sum(1)


@dataclass
class Ranking:
    """Metrics from ranks; ``k`` is the cut-off for HR and NDCG."""

    hr: float
    ndcg: float
    mrr: float
    users: int

    @classmethod
    def from_ranks(cls, ranks: np.ndarray, k: int = 10) -> Ranking:
        ranks = np.asarray(ranks)
        hit = ranks < k
        ndcg = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
        return cls(float(hit.mean()), float(ndcg.mean()), float((1.0 / (ranks + 1.0)).mean()), int(len(ranks)))

    def as_dict(self, k: int, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}hr@{k}": self.hr, f"{prefix}ndcg@{k}": self.ndcg, f"{prefix}mrr": self.mrr}


def evaluate_scores(
    score_fn: Callable[[int, int], np.ndarray],
    histories: np.ndarray,
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
    targets = np.asarray(targets)
    keep = targets >= FIRST_ITEM  # [N]
    kept_targets = targets[keep]
    kept_histories = [h for h, ok in zip(histories, keep) if ok]
    full: list[np.ndarray] = []
    sampled: dict[int, list[np.ndarray]] = {s: [] for s in seeds}
    note: str | None
    try:
        negs = {s: sample_negatives(kept_histories, kept_targets, vocab_size, negatives, s) for s in seeds}
    except ValueError as exc:  # a catalogue too small for the protocol: report full ranking only
        seeds, negs, sampled, note = (), {}, {}, str(exc)
    else:
        note = None
    done = 0  # kept users ranked so far: their offset into the negatives
    for start in range(0, len(targets), batch):
        stop = min(start + batch, len(targets))
        rows = keep[start:stop]
        if not rows.any():
            continue
        scores = score_fn(start, stop)[rows]
        t = targets[start:stop][rows]
        full.append(rank_full(scores, t))
        for s in seeds:
            sampled[s].append(rank_sampled(scores, t, negs[s][done : done + len(t)]))
        done += len(t)
    if not full:
        raise ValueError(f"no target is a real item ({len(targets)} users, all unknown): nothing to rank")
    out: dict[str, Any] = dict(Ranking.from_ranks(np.concatenate(full), k).as_dict(k, "full_"))
    if seeds:
        per_seed = [Ranking.from_ranks(np.concatenate(sampled[s]), k) for s in seeds]
        out.update(
            {
                f"sampled_hr@{k}": float(np.mean([r.hr for r in per_seed])),
                f"sampled_ndcg@{k}": float(np.mean([r.ndcg for r in per_seed])),
                "sampled_mrr": float(np.mean([r.mrr for r in per_seed])),
                f"sampled_hr@{k}_std": float(np.std([r.hr for r in per_seed])),
                f"sampled_ndcg@{k}_std": float(np.std([r.ndcg for r in per_seed])),
            }
        )
    if note:
        out["sampled_note"] = f"sampled metrics omitted: {note}"
    out["users"] = int(keep.sum())
    out["excluded_targets"] = int((~keep).sum())
    return out
