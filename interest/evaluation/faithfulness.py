"""Are the explanations faithful? Deletion and sufficiency, paired per user, against controls.

An explanation names the history steps the attention weighted most. If the model really relies
on them, then:

- **deletion**: removing those k steps lowers the model's probability of its own top
  recommendation more than removing k random steps, and more than removing the k most recent
  steps (recency is the cheap explanation that attention must beat);
- **sufficiency**: keeping only those k steps keeps more of that probability than keeping k
  random or the k most recent steps.

Each comparison is a per-user paired difference with a 95 % bootstrap interval over users
(``interest.scoring.segments``); the explanation wins where the interval lies above 0. A
``shuffled`` rule (the model's own weights permuted over the user's steps: the same weight
profile, positions forgotten) is the control that a sound test must not let pass.

A removed step leaves the others' features as they were (a following step's time gap still
measures the gap to the removed one): the sequences are stored without timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from interest.schema import FIRST_ITEM, SEQUENCE_FEATURES
from interest.scoring.segments import paired_difference

RULES = ("attention", "random", "recent", "shuffled")
CONTROLS = ("random", "recent")


def compact(inputs: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The histories with only the ``keep`` steps [N, L] (bool), moved right and left-padded."""
    keep = keep & (inputs["item_idx"] > 0)
    order = np.argsort(keep, axis=1, kind="stable")  # dropped first, kept last, in their order
    width = keep.shape[1]
    pad = np.arange(width)[None, :] < (width - keep.sum(1))[:, None]  # [N, L]
    out = {}
    for f in SEQUENCE_FEATURES:
        moved = np.take_along_axis(inputs[f], order, axis=1)
        out[f] = np.where(pad, 0, moved).astype(inputs[f].dtype)
    return out


def top_positions(weights: np.ndarray, real: np.ndarray, k: int) -> np.ndarray:
    """[N, L] bool: each row's k real positions with the largest weight (ties: the later step)."""
    w = np.where(real, weights, -np.inf)[:, ::-1]
    order = np.argsort(-w, axis=1, kind="stable")[:, :k]  # reversed: ties go to the later step
    picked = np.zeros_like(real)
    np.put_along_axis(picked, real.shape[1] - 1 - order, True, axis=1)
    return picked & real


def recent_positions(real: np.ndarray, k: int) -> np.ndarray:
    """[N, L] bool: each row's k latest real steps."""
    from_end = np.cumsum(real[:, ::-1], axis=1)[:, ::-1]  # 1 at the latest real step
    return real & (from_end <= k)


def random_positions(real: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """[N, L] bool: k real steps per row, uniformly at random."""
    return top_positions(rng.random(real.shape), real, k)


def shuffled_weights(weights: np.ndarray, real: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The weights permuted over each row's real steps (padding stays 0)."""
    out = np.zeros_like(weights)
    for n in range(len(weights)):
        idx = np.flatnonzero(real[n])
        out[n, idx] = weights[n, rng.permutation(idx)]
    return out


@dataclass
class Faithfulness:
    """Per rule and k, per user: the drop of the top recommendation's probability when the
    rule's k steps are removed (``deletion``) and when only they are kept (``sufficiency``)."""

    users: np.ndarray  # [N] user ids
    base: np.ndarray  # [N] probability of the top recommendation with the whole history
    deletion: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    sufficiency: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)

    def compare(self, rule: str = "attention", seed: int = 0) -> dict[str, Any]:
        """Paired differences of ``rule`` against each control, per k:
        {"deletion": {control: {k: estimate}}, "sufficiency": {...}}. Positive = ``rule`` wins:
        its deletion drops more, its sufficiency drops less."""
        out: dict[str, Any] = {"deletion": {}, "sufficiency": {}}
        for control in CONTROLS:
            out["deletion"][control] = {
                k: paired_difference(self.deletion[rule][k], self.deletion[control][k], seed=seed)
                for k in self.deletion[rule]
            }
            out["sufficiency"][control] = {
                k: paired_difference(self.sufficiency[control][k], self.sufficiency[rule][k], seed=seed)
                for k in self.sufficiency[rule]
            }
        return out

    def passes(self, rule: str = "attention", ks: tuple[int, ...] | None = None, seed: int = 0) -> bool:
        """Deletion beats both controls at every k: each interval's lower bound is above 0."""
        deletion = self.compare(rule, seed)["deletion"]
        return all(e["lo"] > 0 for control in CONTROLS for k, e in deletion[control].items() if ks is None or k in ks)


def _probability_of(encoder: Any, inputs: dict[str, np.ndarray], items: np.ndarray, batch: int = 512) -> np.ndarray:
    """[N] the softmax probability (over the real items) of ``items`` [N] given the histories."""
    out = []
    table = np.asarray(encoder.item_table)[FIRST_ITEM:]  # [V - 2, D]
    for start in range(0, len(items), batch):
        chunk = {f: v[start : start + batch] for f, v in inputs.items()}
        logits = encoder.infer(chunk)["user"] @ table.T  # [B, V - 2]
        logits = logits - logits.max(1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(1, keepdims=True)
        out.append(p[np.arange(len(p)), items[start : start + batch] - FIRST_ITEM])
    return np.concatenate(out) if out else np.zeros(0)


def measure(
    encoder: Any,
    inputs: dict[str, np.ndarray],
    seen,
    users: np.ndarray,
    ks: tuple[int, ...] = (1, 3, 5),
    random_draws: int = 5,
    seed: int = 0,
) -> Faithfulness:
    """Deletion and sufficiency for every rule of :data:`RULES`, on the histories ``inputs``
    ({feature: [N, L]}, read as is) of users with more than ``max(ks)`` steps.

    The top recommendation is the best-scoring real item the user never interacted with
    (``seen``: per user, as the embed job excludes them). ``random`` and ``shuffled`` are averaged
    over ``random_draws`` draws per user.
    """
    from interest.scoring.topn import top_n_unseen

    real = inputs["item_idx"] > 0  # [N, L]
    ok = real.sum(1) > max(ks)
    inputs = {f: v[ok] for f, v in inputs.items()}
    real, users = real[ok], np.asarray(users)[ok]
    seen = [h for h, keep in zip(seen, ok) if keep]
    out = encoder.infer(inputs)
    table = np.asarray(encoder.item_table)
    best, _ = top_n_unseen(out["user"], table, seen, 1)
    top = best[:, 0]  # [N] the top recommendation
    weights = out["attention"]  # [N, L]
    result = Faithfulness(users=users, base=_probability_of(encoder, inputs, top))
    rng = np.random.default_rng(seed)
    for k in ks:
        picks: dict[str, list[np.ndarray]] = {
            "attention": [top_positions(weights, real, k)],
            "recent": [recent_positions(real, k)],
            "random": [random_positions(real, k, rng) for _ in range(random_draws)],
            "shuffled": [top_positions(shuffled_weights(weights, real, rng), real, k) for _ in range(random_draws)],
        }
        for rule, masks in picks.items():
            removed = [result.base - _probability_of(encoder, compact(inputs, ~m), top) for m in masks]
            kept = [result.base - _probability_of(encoder, compact(inputs, m), top) for m in masks]
            result.deletion.setdefault(rule, {})[k] = np.mean(removed, axis=0)
            result.sufficiency.setdefault(rule, {})[k] = np.mean(kept, axis=0)
    return result
