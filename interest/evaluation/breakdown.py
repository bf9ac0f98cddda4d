"""Where each model wins: every scorer on every segment, with intervals, and what each encoder is for.

Scorers (the encoders, popularity, item co-occurrence) rank the targets of a set of tasks
(``interest.scoring.tasks``): the leave-one-out test, cold-start replays, a temporal split. Each
scorer may be several trained models (training seeds): their per-target metrics are averaged
before anything else, so a figure is the mean over seeds with a bootstrap interval over users.
Segments are slices of a task's targets: history length at the cut, drifting or steady interests,
a cold-start replay, the targets after a temporal cut. A comparison of two scorers on a segment is
the interval of their paired per-user difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from interest.scoring.metrics import TargetRanks
from interest.scoring.segments import (
    HISTORY_BINS,
    MIN_SESSIONS,
    bin_label,
    drift_segment,
    estimate,
    format_estimate,
    history_segment,
    paired_difference,
    per_user,
    repeats,
    session_segment,
)
from interest.scoring.tasks import Scorer, Task, rank_task

METRICS = ("sampled_hr", "sampled_ndcg", "full_hr", "full_ndcg")
METRIC_NAMES = {
    "sampled_hr": "HR@{k} (100 neg)",
    "sampled_ndcg": "NDCG@{k} (100 neg)",
    "full_hr": "HR@{k} (full)",
    "full_ndcg": "NDCG@{k} (full)",
}


SESSION_SEGMENTS = (
    f"{MIN_SESSIONS}+ sessions, a new item within a session",
    f"{MIN_SESSIONS}+ sessions, a new item opening a session",
)
REVISITS = "target re-visits an item of the window"


@dataclass(frozen=True)
class Segment:
    """A slice of one task's targets."""

    name: str
    task: str
    mask: np.ndarray  # [N] bool over the task's targets


def segments_of(tasks: dict[str, Task], categories: Sequence[frozenset[str]] | None) -> list[Segment]:
    """The standard segments of whatever tasks are present: all test users, history length at the
    cut, drifting and steady users (with categories), multi-session users whose target continues or
    opens a session, targets that re-visit an item, each cold-start replay, each temporal task."""
    out: list[Segment] = []
    test = tasks.get("test")
    if test is not None:
        out.append(Segment("all users", "test", np.ones(len(test), bool)))
        bins = history_segment(test.history_len)
        for low, high in HISTORY_BINS:
            label = bin_label(low, high)
            out.append(Segment(f"history {label}", "test", bins == label))
        if categories is not None:
            drift = drift_segment(test.inputs["item_idx"], test.targets, categories)
            out.append(Segment("drifting interests", "test", drift == "drifting"))
            out.append(Segment("steady interests", "test", drift == "steady"))
        # a target the user had before is the only one of their items left among the candidates
        # (the protocol removes the others), which flatters any scorer of the user's own items:
        # the session segments hold new items only, re-visits are a segment of their own
        again = repeats(test.inputs["item_idx"], test.targets)
        if test.target_session is not None and "session_idx" in test.inputs:
            where = session_segment(test.inputs["session_idx"], test.target_session)
            out.append(Segment(SESSION_SEGMENTS[0], "test", (where == "within") & ~again))
            out.append(Segment(SESSION_SEGMENTS[1], "test", (where == "opens") & ~again))
        if again.any():
            out.append(Segment(REVISITS, "test", again))
    for name, task in tasks.items():
        if name.startswith("cold_"):
            steps = name.split("_", 1)[1]
            out.append(Segment(f"cold start: first {steps} step(s)", name, np.ones(len(task), bool)))
        elif name.startswith("temporal"):
            label = "first new item after T" if name == "temporal_first" else "new items in the 7 days after T"
            out.append(Segment(label, name, np.ones(len(task), bool)))
            if categories is not None and name == "temporal_first":
                drift = drift_segment(task.inputs["item_idx"], task.targets, categories)
                out.append(Segment(f"{label}, drifting", name, drift == "drifting"))
    return out


@dataclass
class Breakdown:
    """Per scorer and task, the per-target metrics (mean over the scorer's models); the segments;
    and the users of each task, for per-user means and paired comparisons."""

    k: int
    tasks: dict[str, Task]
    segments: list[Segment]
    values: dict[str, dict[str, dict[str, np.ndarray]]] = field(default_factory=dict)  # scorer->task->metric->[N]
    ranked: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # scorer -> task -> [N] bool
    # every target of a segment, those outside the vocabulary as misses (the field's form); False:
    # the ranked targets only
    counted: bool = True

    @property
    def scorers(self) -> list[str]:
        return list(self.values)

    @property
    def metrics(self) -> list[str]:
        """The metrics of :data:`METRICS` every scorer has on every task (sampled ones are absent
        where the catalogue is too small for the protocol)."""
        per_task = [set(v) for tasks in self.values.values() for v in tasks.values()]
        return [m for m in METRICS if all(m in names for names in per_task)]

    def user_values(self, scorer: str, segment: Segment, metric: str) -> np.ndarray:
        """Per user of the segment, the scorer's mean metric (``counted``: unknown targets as misses)."""
        keep = segment.mask & (True if self.counted else self.ranked[scorer][segment.task])
        task = self.tasks[segment.task]
        return per_user(self.values[scorer][segment.task][metric][keep], task.user[keep])

    def estimate(self, scorer: str, segment: Segment, metric: str) -> dict[str, Any]:
        return estimate(self.user_values(scorer, segment, metric))

    def compare(self, a: str, b: str, segment: Segment, metric: str) -> dict[str, Any]:
        """``a - b`` per user of the segment (without ``counted``: those both could rank): mean and
        bootstrap interval."""
        keep = segment.mask
        if not self.counted:
            keep = keep & self.ranked[a][segment.task] & self.ranked[b][segment.task]
        users = self.tasks[segment.task].user[keep]
        va = per_user(self.values[a][segment.task][metric][keep], users)
        vb = per_user(self.values[b][segment.task][metric][keep], users)
        return paired_difference(va, vb)

    def rows(self, metric: str) -> list[dict[str, Any]]:
        """One row per segment: its size and every scorer's estimate of ``metric``."""
        out = []
        for seg in self.segments:
            row: dict[str, Any] = {"segment": seg.name, "task": seg.task}
            for scorer in self.scorers:
                row[scorer] = self.estimate(scorer, seg, metric)
            row["users"] = max((row[s]["n"] for s in self.scorers), default=0)
            out.append(row)
        return out

    def markdown(self, metric: str, digits: int = 3) -> str:
        """The segment table of one metric: ``mean [95 % interval]`` per scorer, users per segment."""
        head = ["segment", "users", *self.scorers]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.rows(metric):
            if not row["users"]:
                continue
            cells = [row["segment"], f"{row['users']:,}", *[format_estimate(row[s], digits) for s in self.scorers]]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def wins(self, reference: str, metric: str) -> list[dict[str, Any]]:
        """Every segment where a scorer beats ``reference`` with a paired interval above 0."""
        out = []
        for seg in self.segments:
            for scorer in self.scorers:
                if scorer == reference:
                    continue
                diff = self.compare(scorer, reference, seg, metric)
                if diff["n"] and diff["lo"] > 0:
                    out.append({"scorer": scorer, "segment": seg.name, "metric": metric, **diff})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            metric: [
                {
                    "segment": r["segment"],
                    "users": r["users"],
                    **{s: {k: v for k, v in r[s].items()} for s in self.scorers},
                }
                for r in self.rows(metric)
            ]
            for metric in self.metrics
        }


def mean_values(ranks: Sequence[TargetRanks], k: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-target metrics averaged over several models' ranks of the same task (counted form:
    unranked targets are misses), and which targets were ranked (by all of them)."""
    values = [r.values(k, counted=True) for r in ranks]
    mean = {m: np.mean([v[m] for v in values], axis=0) for m in values[0]}
    ranked = np.logical_and.reduce([r.ranked for r in ranks])
    return mean, ranked


def build_breakdown(
    scorers: dict[str, Sequence[Scorer]],
    tasks: dict[str, Task],
    vocab_size: int,
    categories: Sequence[frozenset[str]] | None,
    k: int = 10,
    negatives: int = 100,
    seeds: tuple[int, ...] = (1, 2, 3),
    progress=None,
) -> Breakdown:
    """Rank every task under every scorer (each a list of models, e.g. one per training seed)."""
    out = Breakdown(k, tasks, segments_of(tasks, categories))
    for name, models in scorers.items():
        out.values[name], out.ranked[name] = {}, {}
        for task_name, task in tasks.items():
            ranks = [rank_task(model, task, vocab_size, negatives, seeds) for model in models]
            out.values[name][task_name], out.ranked[name][task_name] = mean_values(ranks, k)
            if progress is not None:
                progress(f"{name}: {task_name} ranked ({len(task):,} targets, {len(models)} model(s))")
    return out
