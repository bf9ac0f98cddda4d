"""What a scorer is asked to rank, and the scorers: one shape for every protocol.

A :class:`Task` holds, per target, the history a scorer may read (feature arrays in the layout an
encoder reads as is: most recent step last, left-padded), the item to find, the items that are
never candidates (everything the user interacted with), and who the user is. The protocols only
differ in how they build a task:

- :func:`leave_one_out`: each user's last step (test) or the one before (valid), from the stored
  window, as training and the published table have always been evaluated;
- :func:`cold_replay`: the same test target, but the history cut to the user's first ``n`` steps,
  a cold-start user replayed from a real one;
- :func:`temporal`: a global cut T; the history is what the run for T saw, the targets are what
  the user did after T (see the function).

A scorer turns a batch of histories into scores over the items: an encoder (user vector · item
table), popularity, or item co-occurrence (``interest.scoring.cooccurrence``). :func:`rank_task`
ranks a task's targets under one scorer with the shared protocol (``interest.scoring.metrics``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

import numpy as np

from interest.schema import FIRST_ITEM, SEQUENCE_FEATURES, SHIFT, TARGET_POS, UNKNOWN
from interest.scoring.metrics import TargetRanks, rank_targets


@dataclass(frozen=True)
class Task:
    """Per target: what the scorer reads, the item to find, the items that are never candidates."""

    name: str
    inputs: dict[str, np.ndarray]  # feature -> [N, L] int32, read as is (most recent step last)
    targets: np.ndarray  # [N] item index (< FIRST_ITEM: not a known item, cannot be ranked)
    seen: np.ndarray  # [N] object: per target, the item indices the user ever interacted with
    user: np.ndarray  # [N] user id; a user may have several targets
    history_len: np.ndarray  # [N] steps the user had before the target
    # item rows ranked (indices below it): a later date's vocabulary for the temporal tasks, whose
    # targets may be newer items; None: the vocabulary the caller ranks with
    catalogue: int | None = None
    # [N] the target step's session_idx (leave-one-out tasks; None where unknown): a target that
    # shares it with the history's last step continues a session
    target_session: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def take(self, index: np.ndarray) -> Task:
        """The targets at ``index`` (a boolean mask or positions)."""
        return replace(
            self,
            inputs={f: v[index] for f, v in self.inputs.items()},
            targets=self.targets[index],
            seen=self.seen[index],
            user=self.user[index],
            history_len=self.history_len[index],
            target_session=None if self.target_session is None else self.target_session[index],
        )


def shift_right(x: np.ndarray, k: int) -> np.ndarray:
    """Drop the last ``k`` steps and left-pad with zeros: [N, L] -> [N, L] (``reader.shift_right``
    in NumPy)."""
    if k == 0:
        return x
    out = np.zeros_like(x)
    out[:, k:] = x[:, :-k]
    return out


def _ragged(histories) -> np.ndarray:
    out = np.empty(len(histories), dtype=object)
    out[:] = [np.asarray(h, dtype=np.int64) for h in histories]
    return out


def leave_one_out(rows: dict[str, np.ndarray], split: str = "test") -> Task:
    """The valid or test targets of stored windows (``files.load_rows``): the history is the window
    without its last 2 (valid) or 1 (test) steps."""
    items = rows["item_idx"]
    histories = rows.get("history_idx", items)
    return Task(
        name=split,
        inputs={f: shift_right(rows[f], SHIFT[split]) for f in SEQUENCE_FEATURES},
        targets=items[:, TARGET_POS[split]].astype(np.int64),
        seen=_ragged(histories),
        user=np.asarray(rows.get("user_id", np.arange(len(items)))),
        history_len=np.asarray(rows["n_steps"]) + TARGET_POS[split] if "n_steps" in rows else (items > 0).sum(1) - 1,
        target_session=np.asarray(rows["session_idx"])[:, TARGET_POS[split]] if "session_idx" in rows else None,
    )


def cold_replay(test: Task, earliest: dict[str, np.ndarray], steps: int) -> Task:
    """Cold-start users replayed from real ones: each user's test target, predicted from only their
    first ``steps`` steps.

    ``earliest``: per user of ``test`` (same order), the stored window that holds their first step
    (``files.earliest_windows``); users whose first steps were not stored (or with fewer than
    ``steps`` steps before the target) are left out. Features keep their stored values: the first
    step's time gap is already "first step". What the user has seen is the prefix alone: items they
    reached only later are candidates and negatives, as they would be for a real new user.
    """
    items = earliest["item_idx"]
    width = items.shape[1]
    first = np.argmax(items > 0, axis=1)  # [N] position of the first real step
    ok = earliest["complete"].astype(bool) & (test.history_len >= steps) & (first + steps <= width)
    inputs = {}
    for f in SEQUENCE_FEATURES:
        out = np.zeros_like(earliest[f])
        cols = first[:, None] + np.arange(steps)[None, :]  # [N, steps]
        cols = np.minimum(cols, width - 1)
        out[:, width - steps :] = np.take_along_axis(earliest[f], cols, axis=1)
        inputs[f] = out
    prefix = inputs["item_idx"]  # [N, L]
    seen = _ragged([row[row >= FIRST_ITEM] for row in prefix])
    cut = replace(
        test, name=f"cold_{steps}", inputs=inputs, seen=seen, history_len=np.full(len(test), steps), target_session=None
    )
    return cut.take(ok)


def temporal(before: dict[str, np.ndarray], after: dict[str, np.ndarray], first_only: bool = True) -> Task:
    """A global cut T: history as the run for T saw it, targets from what the user did after T.

    ``before``: the inference rows of the run for T; ``after``: those of a later run (T + 7 days)
    over the same vocabulary grown from T's, so item indices agree and items first seen after T
    have new indices. Per user in both, the steps after T are the last ``n_steps(after) -
    n_steps(before)`` steps of the later window. The targets are the items new to the user (not in
    their history at T): the first one (``first_only``) or every distinct one. Candidates exclude
    everything the user interacted with up to the later run.

    Users whose later window does not reach back to the steps at T, or whose steps at T changed
    (a step merged across the cut), cannot be split and are left out.
    """
    index = {u: i for i, u in enumerate(after["user_id"])}
    width = before["item_idx"].shape[1]
    pick_b, pick_a, targets = [], [], []
    for b, user in enumerate(before["user_id"]):
        a = index.get(user)
        if a is None:
            continue
        new_steps = int(after["n_steps"][a]) - int(before["n_steps"][b])
        if new_steps <= 0 or new_steps >= width:
            continue
        later = after["item_idx"][a]
        overlap = min(int(before["n_steps"][b]), width - new_steps)
        if not np.array_equal(later[width - new_steps - overlap : width - new_steps], before["item_idx"][b][-overlap:]):
            continue
        known = set(np.asarray(before["history_idx"][b]).tolist())
        fresh = [int(i) for i in dict.fromkeys(later[width - new_steps :].tolist()) if int(i) not in known]
        for item in fresh[:1] if first_only else fresh:
            pick_b.append(b)
            pick_a.append(a)
            targets.append(item)
    pb, pa = np.asarray(pick_b, np.int64), np.asarray(pick_a, np.int64)
    return Task(
        name="temporal_first" if first_only else "temporal_week",
        inputs={f: before[f][pb] for f in SEQUENCE_FEATURES},
        targets=np.asarray(targets, np.int64),
        seen=_ragged([after["history_idx"][a] for a in pa]),
        user=np.asarray(before["user_id"])[pb],
        history_len=np.asarray(before["n_steps"])[pb],
    )


S = TypeVar("S")


def best_on_validation(
    candidates: Iterable[tuple[dict, S]], validate: Callable[[S], float]
) -> tuple[S, list[tuple[dict, float]]]:
    """A baseline's settings picked on validation, never on test: the candidate ``validate`` rates
    highest (the first on ties), and every (settings, score) tried."""
    tried: list[tuple[dict, float]] = []
    best, best_score = None, -np.inf
    for settings, scorer in candidates:
        score = float(validate(scorer))
        tried.append((settings, score))
        if score > best_score:
            best, best_score = scorer, score
    if best is None:
        raise ValueError("no settings to pick from: the grid is empty")
    return best, tried


class Scorer(Protocol):
    """Scores over the items [B, V] for a batch of histories ({feature: [B, L]})."""

    name: str

    def scores(self, inputs: dict[str, np.ndarray]) -> np.ndarray: ...


@dataclass
class EncoderScorer:
    """An encoder's user vector · an item table (the model's own, or one extended with vectors for
    items newer than the model)."""

    name: str
    encoder: object
    table: np.ndarray | None = None  # [V, D]; None: the encoder's item table

    def __post_init__(self) -> None:
        if self.table is None:
            self.table = np.asarray(self.encoder.item_table)  # type: ignore[attr-defined]

    def users(self, inputs: dict[str, np.ndarray], batch: int = 512) -> np.ndarray:
        """User vectors [B, D], encoded ``batch`` rows at a time; item indices the model has no row
        for read as the unknown item."""
        size = self.encoder.args["vocab_size"]  # type: ignore[attr-defined]
        out = []
        for start in range(0, len(inputs["item_idx"]), batch):
            feats = {f: v[start : start + batch] for f, v in inputs.items()}
            feats["item_idx"] = np.where(feats["item_idx"] >= size, UNKNOWN, feats["item_idx"]).astype(np.int32)
            out.append(self.encoder.infer(feats)["user"])  # type: ignore[attr-defined]
        return np.concatenate(out) if out else np.zeros((0, self.encoder.dim), np.float32)  # type: ignore[attr-defined]

    def scores(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.users(inputs) @ np.asarray(self.table).T


@dataclass
class InterestsScorer(EncoderScorer):
    """Multi-interest retrieval: each item scores by the best of the user's interest vectors
    (``max_k interests_k · item``), so every interest gets its own nearest items."""

    def scores(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        size = self.encoder.args["vocab_size"]  # type: ignore[attr-defined]
        feats = dict(inputs)
        feats["item_idx"] = np.where(inputs["item_idx"] >= size, UNKNOWN, inputs["item_idx"]).astype(np.int32)
        interests = self.encoder.infer(feats)["interests"]  # type: ignore[attr-defined]  # [B, K, D]
        return np.einsum("bkd,vd->bkv", interests, np.asarray(self.table)).max(1)  # [B, V]


@dataclass
class PopularityScorer:
    """Every user gets the same scores: the items' training step counts (ties in index order)."""

    counts: np.ndarray  # [V]
    name: str = "popularity"

    def scores(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        pop = self.counts.astype(np.float64) + np.linspace(0, 1e-3, len(self.counts))  # stable ties, [V]
        return np.broadcast_to(pop, (len(inputs["item_idx"]), len(pop)))


def rank_task(
    scorer: Scorer, task: Task, vocab_size: int, negatives: int = 100, seeds: tuple[int, ...] = (), batch: int = 1024
) -> TargetRanks:
    """Every target of ``task`` ranked under ``scorer`` (the shared protocol of ``metrics``), among
    the items below ``task.catalogue`` (default ``vocab_size``): a scorer that knows more items
    (vectors for a later vocabulary) ranks the same catalogue as one that does not."""
    vocab_size = task.catalogue or vocab_size

    def score_fn(start: int, stop: int) -> np.ndarray:
        s = scorer.scores({f: v[start:stop] for f, v in task.inputs.items()})
        if s.shape[1] < vocab_size:  # items the scorer knows nothing of score lowest
            s = np.pad(s, ((0, 0), (0, vocab_size - s.shape[1])), constant_values=-np.inf)
        return s[:, :vocab_size]

    return rank_targets(score_fn, task.seen, task.targets, vocab_size, negatives, seeds, batch)
