"""The evaluation report: one table of every encoder beside popularity, and the curves as PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure  # no pyplot: no global backend state, fine headless and in notebooks

CURVE_SIZE = (10.0, 4.0)  # inches at 100 dpi -> 1000 x 400 px
DPI = 100


def _fmt(metrics: dict[str, Any], key: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "–"
    std = metrics.get(f"{key}_std")
    return f"{value:.4f}" + (f" ± {std:.4f}" if std else "")


def markdown_table(results: list[dict[str, Any]], k: int, negatives: int) -> str:
    """results: [{"model", "version", "epochs", "train_s", "test": {...}}] -> a Markdown table."""
    head = [
        "model",
        "version",
        "best epoch",
        "train s",
        f"HR@{k}",
        f"NDCG@{k}",
        "MRR",
        f"HR@{k} ({negatives} neg)",
        f"NDCG@{k} ({negatives} neg)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        t = r["test"]
        lines.append(
            "| "
            + " | ".join(
                [
                    r["model"],
                    r.get("version", "–"),
                    str(r.get("best_epoch") or "–"),
                    f"{r['train_s']:.0f}" if r.get("train_s") is not None else "–",
                    _fmt(t, f"full_hr@{k}"),
                    _fmt(t, f"full_ndcg@{k}"),
                    _fmt(t, "full_mrr"),
                    _fmt(t, f"sampled_hr@{k}"),
                    _fmt(t, f"sampled_ndcg@{k}"),
                ]
            )
            + " |"
        )
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


def write_report(
    out_dir: Path,
    date: str,
    results: list[dict[str, Any]],
    histories: dict[str, list[dict[str, Any]]],
    k: int,
    negatives: int,
    users: int,
    extra_figures: dict[str, Path] | None = None,
) -> dict[str, Path]:
    """Write report.md, metrics.json and validation_curves.png into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = plot_curves(histories, k, out_dir / "validation_curves.png") if histories else None
    figures = {"validation_curves": curves} if curves else {}
    figures.update(extra_figures or {})
    lines = [
        f"# Evaluation {date}",
        "",
        f"Test split: each user's last step, predicted from everything before it ({users:,} users). "
        f"Full ranking ranks the target among all items; the sampled columns rank it among "
        f"{negatives} items the user never interacted with (the SASRec paper's protocol), mean ± "
        "std over the sampling seeds. Popularity scores every user with the items' step counts.",
        "",
        markdown_table(results, k, negatives),
        "",
    ]
    for name, fig in figures.items():
        lines += [f"![{name}]({Path(fig).name})", ""]
    (out_dir / "report.md").write_text("\n".join(lines))
    (out_dir / "metrics.json").write_text(json.dumps({"date": date, "results": results}, indent=2))
    return {"report": out_dir / "report.md", "metrics": out_dir / "metrics.json", **figures}
