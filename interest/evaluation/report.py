"""The evaluation report: the headline table, every scorer per segment with intervals, new items,
beyond accuracy and faithfulness, with the curves, a segment chart and attention heatmaps as PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global backend state, fine headless and in notebooks

from interest.scoring.metrics import ALSO_AT
from interest.scoring.segments import format_estimate

if TYPE_CHECKING:
    from interest.evaluation.breakdown import Breakdown

CURVE_SIZE = (10.0, 4.0)  # inches at 100 dpi -> 1000 x 400 px
SEGMENT_SIZE = (12.0, 5.0)
DPI = 100


def _fmt(metrics: dict[str, Any], key: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "–"
    std = metrics.get(f"{key}_std")
    return f"{value:.4f}" + (f" ± {std:.4f}" if std else "")


def markdown_table(results: list[dict[str, Any]], k: int, negatives: int) -> str:
    """results: [{"model", "version", "best_epoch", "train_s", "test", "test_counted"}] -> Markdown.
    The field's form first: full ranking with targets outside the vocabulary counted as misses
    (``test_counted``); the sampled protocol after it, as a second column only."""
    cuts = [k, *(c for c in ALSO_AT if c != k)]
    head = [
        "model",
        "best epoch",
        "train s",
        *[f"{m}@{c}" for c in cuts for m in ("HR", "NDCG")],
        "MRR",
        f"HR@{k} ({negatives} neg)",
        f"NDCG@{k} ({negatives} neg)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        c = r.get("test_counted") or r["test"]
        cells = [
            r["model"],
            str(r.get("best_epoch") or "–"),
            f"{r['train_s']:.0f}" if r.get("train_s") else "–",
            *[_fmt(c, f"full_{m}@{cut}") for cut in cuts for m in ("hr", "ndcg")],
            _fmt(c, "full_mrr"),
            _fmt(c, f"sampled_hr@{k}"),
            _fmt(c, f"sampled_ndcg@{k}"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(histories: dict[str, list[dict[str, Any]]], k: int, path: Path) -> Path:
    """Validation NDCG@k and training loss per epoch for each model, side by side."""
    fig = Figure(figsize=CURVE_SIZE, dpi=DPI)
    left, right = fig.subplots(1, 2)
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history if f"valid_full_ndcg@{k}" in h]
        left.plot(
            epochs,
            [h[f"valid_full_ndcg@{k}"] for h in history if f"valid_full_ndcg@{k}" in h],
            marker="o",
            ms=3,
            label=name,
        )
        right.plot([h["epoch"] for h in history], [h["loss"] for h in history], label=name)
    left.set(title=f"validation NDCG@{k} (full ranking)", xlabel="epoch", ylabel=f"NDCG@{k}")
    right.set(title="training loss", xlabel="epoch", ylabel="cross-entropy")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def plot_segments(breakdown: Breakdown, metric: str, title: str, path: Path) -> Path:
    """Grouped bars: each scorer's mean per segment, with its 95 % interval as an error bar."""
    rows = [r for r in breakdown.rows(metric) if r["users"]]
    scorers = breakdown.scorers
    fig = Figure(figsize=SEGMENT_SIZE, dpi=DPI)
    ax = fig.subplots()
    width = 0.8 / max(len(scorers), 1)
    x = np.arange(len(rows))
    for i, scorer in enumerate(scorers):
        mean = np.array([r[scorer]["mean"] for r in rows])
        lo = np.array([r[scorer]["lo"] for r in rows])
        hi = np.array([r[scorer]["hi"] for r in rows])
        err = np.nan_to_num(np.vstack([mean - lo, hi - mean]))
        ax.bar(x + (i - (len(scorers) - 1) / 2) * width, mean, width, yerr=err, capsize=2, label=scorer)
    ax.set_xticks(x, [f"{r['segment']}\n({r['users']:,})" for r in rows], rotation=30, ha="right", fontsize=7)
    ax.set(title=title, ylabel=title.split(" per ")[0])
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, ncol=min(len(scorers), 5))
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def _faithfulness_table(sections: dict[str, Any]) -> list[str]:
    faith = sections.get("faithfulness") or {}
    if not faith:
        return []
    cols = list(next(iter(faith.values()))["deletion"])
    lines = [
        "## Are the explanations faithful?",
        "",
        "Paired per user: how much more removing the k most-attended steps lowers the probability of the "
        "model's own top recommendation than removing k random or the k most recent steps (deletion), and "
        "how much less keeping only them loses (sufficiency). Mean [95 % interval]; above 0 = the "
        "attention wins.",
        "",
        "| encoder | test | users | " + " | ".join(cols) + " |",
        "|" + "---|" * (len(cols) + 3),
    ]
    for name, f in faith.items():
        for kind in ("deletion", "sufficiency"):
            cells = [format_estimate(f[kind][c], 4) for c in cols]
            lines.append(f"| {name} | {kind} | {f['users']:,} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _beyond_table(sections: dict[str, Any], k: int) -> list[str]:
    beyond = sections.get("beyond") or {}
    if not beyond:
        return []
    lines = [
        "## Beyond accuracy (the lists the embed job publishes)",
        "",
        f"| model | coverage@{k} | intra-list diversity | novelty (bits) |",
        "|---|---|---|---|",
    ]
    for name, b in beyond.items():
        div = format_estimate(b["diversity"]) if "diversity" in b else "–"
        lines.append(f"| {name} | {b[f'coverage@{k}']:.3f} | {div} | {format_estimate(b['novelty'], 2)} |")
    purity = sections.get("slot_purity")
    if purity:
        lines += [
            "",
            f"Memory slots: purity {format_estimate(purity['purity'])} against {format_estimate(purity['shuffled'])} "
            f"with the same assignment shuffled (difference {format_estimate(purity['difference'])}).",
        ]
    return [*lines, ""]


def _new_items_table(sections: dict[str, Any], k: int) -> list[str]:
    rows = sections.get("new_items") or []
    if not rows:
        return []
    modes = [m for m in rows[0] if m not in ("task", "model", "new item targets", "targets")]
    lines = [
        "## New items after the cut",
        "",
        "Items first seen after T ranked with their category's mean vector (cold), a random vector of the "
        "same scale, or left out of targets and candidates.",
        "",
        "| task | model | targets | new-item targets | " + " | ".join(modes) + " |",
        "|" + "---|" * (len(modes) + 4),
    ]
    for r in rows:
        cells = [format_estimate(r[m]) for m in modes]
        lines.append(
            f"| {r['task']} | {r['model']} | {r['targets']:,} | {r['new item targets']:,} | " + " | ".join(cells) + " |"
        )
    return [*lines, ""]


def write_report(
    out_dir: Path,
    date: str,
    results: list[dict[str, Any]],
    breakdown: Breakdown | None,
    sections: dict[str, Any],
    histories: dict[str, list[dict[str, Any]]],
    versions: dict[str, list[str]],
    k: int,
    negatives: int,
    extra_figures: dict[str, Path] | None = None,
) -> dict[str, Path]:
    """Write report.md, metrics.json and the figures into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Path] = {}
    if histories and any(histories.values()):
        figures["validation_curves"] = plot_curves(histories, k, out_dir / "validation_curves.png")
    users = results[0]["test"].get("users", 0) if results else 0
    excluded = results[0]["test"].get("excluded_targets", 0) if results else 0
    lines = [
        f"# Evaluation {date}",
        "",
        f"Test split: each user's last step, predicted from everything before it ({users + excluded:,} users; "
        f"the {excluded:,} whose target is outside the vocabulary count as misses, as the field counts them). "
        "Candidates are the items the user never interacted with. Full ranking, the headline, ranks the target "
        f"among all of them; the sampled columns among {negatives} of them (the SASRec paper's protocol, "
        "which can reverse the order of two models), mean ± std over the sampling seeds. "
        "Popularity scores every user with the items' training counts; "
        "co-occurrence by the items that followed the user's last items in training; "
        "session-kNN with reminders by the training sessions most like the user's current one, "
        "plus the user's own earlier items.",
        "",
        markdown_table(results, k, negatives),
        "",
    ]
    if breakdown is not None:
        for metric, title in (("full_hr", f"HR@{k} (full ranking)"), ("sampled_hr", f"HR@{k} (100 neg)")):
            if metric not in breakdown.metrics:
                continue
            name = f"segments_{metric}"
            figures[name] = plot_segments(breakdown, metric, f"{title} per segment", out_dir / f"{name}.png")
            lines += [
                f"## {title} per segment",
                "",
                "Mean [95 % bootstrap interval over users]. History length counts the steps before the target; "
                "drifting users' target is in none of the two categories their history holds most; a cold-start "
                "replay predicts the same target from only the user's first steps. The session segments hold "
                "users with 3 or more sessions whose target is new to them; a re-visited target is the only one "
                "of the user's items left among the candidates, so it flatters scorers of the user's own items.",
                "",
                breakdown.markdown(metric),
                "",
                f"![{name}]({name}.png)",
                "",
            ]
    lines += _new_items_table(sections, k) + _beyond_table(sections, k) + _faithfulness_table(sections)
    figures.update(extra_figures or {})
    for name, fig in figures.items():
        if not name.startswith("segments_"):
            lines += [f"![{name}]({Path(fig).name})", ""]
    (out_dir / "report.md").write_text("\n".join(lines))
    payload = {
        "date": date,
        "results": results,
        "versions": versions,
        "segments": breakdown.to_dict() if breakdown is not None else {},
        **sections,
    }
    (out_dir / "metrics.json").write_text(json.dumps(payload, indent=2, default=_json_default))
    return {"report": out_dir / "report.md", "metrics": out_dir / "metrics.json", **figures}


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
