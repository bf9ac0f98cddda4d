"""Are the explanations faithful? Deletion and sufficiency, paired per user, against controls.

An explanation names the k history items the attention weighted most, as the embed job publishes
it (``scoring.topn.top_weighted_batch``: an item's weight summed over its repeats, the unknown item
never named). If the model really relies on them, then:

- **deletion**: removing every step of those k items lowers the model's probability of its own top
  recommendation more than removing k random items, and more than removing the k most recent
  items (recency is the cheap explanation that attention must beat);
- **sufficiency**: keeping only those items' steps keeps more of that probability than keeping k
  random or the k most recent items.

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
from interest.scoring.topn import top_weighted_batch

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


def explained_positions(items: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """[N, L] bool: every step of the k items the published explanation names for ``weights``
    (items, weights [N, L])."""
    picked, _, offsets = top_weighted_batch(items, weights, k)
    width = int(items.max(initial=0)) + 1
    rows = np.repeat(np.arange(len(items), dtype=np.int64), np.diff(offsets))
    keys = np.arange(len(items), dtype=np.int64)[:, None] * width + items  # (row, item) per step
    return np.isin(keys, rows * width + picked) & (items >= FIRST_ITEM)


def last_steps(items: np.ndarray) -> np.ndarray:
    """[N, L] bool: the latest step of each distinct real item in a row."""
    width = int(items.max(initial=0)) + 1
    keys = (np.arange(len(items), dtype=np.int64)[:, None] * width + items)[:, ::-1].ravel()
    _, first = np.unique(keys, return_index=True)  # in the reversed rows: each item's latest step
    out = np.zeros(keys.shape, bool)
    out[first] = True
    return out.reshape(items.shape)[:, ::-1] & (items >= FIRST_ITEM)


def recent_positions(items: np.ndarray, k: int) -> np.ndarray:
    """[N, L] bool: every step of each row's k most recently seen real items."""
    order = np.broadcast_to(np.arange(1, items.shape[1] + 1, dtype=np.float64), items.shape)
    return explained_positions(items, np.where(last_steps(items), order, 0.0), k)


def random_positions(items: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """[N, L] bool: every step of k real items per row, drawn uniformly among its distinct items."""
    draw = rng.random(items.shape) + 1.0  # > 0: an item's one weight, at its latest step
    return explained_positions(items, np.where(last_steps(items), draw, 0.0), k)


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
    ({feature: [N, L]}, read as is) of users with more than ``max(ks)`` distinct known items.

    The top recommendation is the best-scoring real item the user never interacted with
    (``seen``: per user, as the embed job excludes them). ``random`` and ``shuffled`` are averaged
    over ``random_draws`` draws per user.
    """
    from interest.scoring.topn import top_n_unseen

    real = inputs["item_idx"] > 0  # [N, L]
    ok = last_steps(inputs["item_idx"]).sum(1) > max(ks)
    inputs = {f: v[ok] for f, v in inputs.items()}
    real, users = real[ok], np.asarray(users)[ok]
    items = inputs["item_idx"]
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
            "attention": [explained_positions(items, weights, k)],
            "recent": [recent_positions(items, k)],
            "random": [random_positions(items, k, rng) for _ in range(random_draws)],
            "shuffled": [
                explained_positions(items, shuffled_weights(weights, real, rng), k) for _ in range(random_draws)
            ],
        }
        for rule, masks in picks.items():
            removed = [result.base - _probability_of(encoder, compact(inputs, ~m), top) for m in masks]
            kept = [result.base - _probability_of(encoder, compact(inputs, m), top) for m in masks]
            result.deletion.setdefault(rule, {})[k] = np.mean(removed, axis=0)
            result.sufficiency.setdefault(rule, {})[k] = np.mean(kept, axis=0)
    return result
