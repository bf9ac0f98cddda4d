"""What a night reports: the typed record of every stage (report.json), the Markdown report with
its pictures (drift, next-day quality over the dates), and the MLflow run."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global backend state, fine headless and in notebooks

from interest import storage, tracking
from interest.config import Config
from interest.etl.summary import SessionizeSummary
from interest.layout import Layout
from interest.serving.embed import EmbedResult
from interest.serving.quality import Drift, NextDayQuality


@dataclass(frozen=True)
class ModelUsed:
    """The model a night's embeddings came from, and how it was obtained."""

    path: str
    version: str
    action: str  # reused / trained (warm start or from scratch)
    trained_on: str | None
    workers: int | None
    test: dict[str, Any] | None  # its test metrics on the date it was trained on
    popularity_test: dict[str, Any] | None


@dataclass(frozen=True)
class NightlyReport:
    """One night's refresh: every stage's result, the drift and the timings (report.json)."""

    date: str
    encoder: str
    table: str
    model: ModelUsed
    sessionize: SessionizeSummary
    embed: EmbedResult
    drift: Drift | None  # since the previous published date
    timings_s: dict[str, float]
    quality: NextDayQuality | None = None  # the previous date's recommendations, scored on this date
    report_files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def report_path(layout: Layout) -> str:
    """The nightly report of the layout's date: written last, so its presence means the date is done."""
    return storage.join(layout.report("nightly"), "report.json")


def _quality_figure(path: Path, rows: list[dict[str, Any]]) -> None:
    """Next-day HR and NDCG (model and popularity) and drift over the dates of ``daily_quality``."""
    scored = [r for r in rows if r.get("users")]
    fig = Figure(figsize=(8, 3.5), dpi=100)
    left, right = fig.subplots(1, 2)
    days = [r["dt"] for r in scored]
    for key, style, label in (
        ("hr", "o-", "HR (model)"),
        ("ndcg", "s-", "NDCG (model)"),
        ("popularity_hr", "o--", "HR (popularity)"),
        ("popularity_ndcg", "s--", "NDCG (popularity)"),
    ):
        left.plot(days, [r[key] for r in scored], style, label=label)
    left.set(title="next-day quality", ylabel=f"@{rows[-1]['k']}, previous night's list", ylim=(0, None))
    left.legend(fontsize=7)
    drifted = [r for r in rows if r.get("mean_cosine") is not None]
    right.plot([r["dt"] for r in drifted], [r["mean_cosine"] for r in drifted], "o-", label="mean cosine to previous")
    right.plot(
        [r["dt"] for r in drifted], [r["top_interest_changed"] for r in drifted], "s-", label="top interest changed"
    )
    right.set(title="drift", ylim=(0, 1.05))
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    fig.tight_layout()
    fig.savefig(path)


def write_report(
    out: Path, report: NightlyReport, cosines: np.ndarray | None, quality_rows: list[dict[str, Any]] | None = None
) -> dict[str, str]:
    """report.json, report.md, (from the second day on) drift.png, and quality.png over the dates."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / "report.json"), "markdown": str(out / "report.md")}
    if quality_rows and any(r.get("users") or r.get("mean_cosine") is not None for r in quality_rows):
        _quality_figure(out / "quality.png", quality_rows)
        files["quality_figure"] = str(out / "quality.png")
    d = report.drift
    if d is not None and cosines is not None and len(cosines):
        fig = Figure(figsize=(6, 3.5), dpi=100)
        ax = fig.subplots()
        ax.hist(cosines, bins=40, range=(-1, 1), color="#4C72B0")
        mean = float(np.mean(cosines))
        ax.axvline(mean, color="k", ls="--", label=f"mean {mean:.3f}")
        ax.set(
            title=f"embedding drift {d.previous_date} → {report.date}",
            xlabel="cosine(today, previous)",
            ylabel="users",
        )
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "drift.png")
        files["drift_figure"] = str(out / "drift.png")
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))
    s, m, e = report.sessionize, report.model, report.embed
    lines = [
        f"# Nightly refresh {report.date}",
        "",
        f"Table `{report.table}` partition `dt={report.date}` ({e.rows:,} users, "
        f"{e.cold_start:,} cold start, {e.fallback:,} fallback) from model `{m.version}` "
        f"({m.action}).",
        "",
        "| stage | count |",
        "|---|---|",
        f"| raw rows in | {s.rows_in:,} |",
        *[f"| skipped source file: {f.path} ({f.bytes:,} bytes) | {f.error} |" for f in s.skipped_files],
        *[f"| rejected: {reason} | {n:,} |" for reason, n in s.rejected.items()],
        f"| duplicates removed | {s.duplicates_removed:,} |",
        f"| events kept | {s.events_kept:,} |",
        f"| users / trainable / cold | {s.users:,} / {s.train_users:,} / {s.cold_users:,} |",
        f"| sessions | {s.sessions:,} |",
        f"| vocabulary rows | {s.vocab_size:,} |",
        f"| embeddings published | {e.rows:,} |",
        "",
        f"Nearest-neighbour index ({e.index_kind}, {e.index_seconds:.1f} s) of the model's items: `{e.index}`.",
        f"SavedModel for TensorFlow Serving: `{e.saved_model}`.",
        "",
    ]
    if m.test:
        t, p = m.test, m.popularity_test or {}
        lines += [
            f"Model test metrics (trained on {m.trained_on}): NDCG@10 {t.get('full_ndcg@10', 0):.4f}, "
            f"HR@10 {t.get('full_hr@10', 0):.4f} (popularity NDCG@10 {p.get('full_ndcg@10', 0):.4f}).",
            "",
        ]
    lines += [
        "Gates: " + ", ".join(f"{k} {'ok' if g.ok else 'FAILED'} ({g.detail})" for k, g in e.users.gates.items()),
        "",
    ]
    if d:
        lines += [
            f"Drift since {d.previous_date}: mean cosine {d.mean_cosine or 0:.3f} over "
            f"{d.users_in_both:,} users; top interest changed for {d.top_interest_changed or 0:.1%}.",
            "",
            "![drift](drift.png)",
            "",
        ]
    else:
        lines += ["Drift: no earlier partition to compare with.", ""]
    qy = report.quality
    if qy is not None and qy.users:
        lines += [
            f"Next-day quality of {qy.previous_date}'s recommendations on {report.date}'s steps "
            f"({qy.users:,} users active on both days): HR@{qy.k} {qy.hr:.4f}, NDCG@{qy.k} {qy.ndcg:.4f} "
            f"(popularity {qy.popularity_hr:.4f} / {qy.popularity_ndcg:.4f}).",
            "",
        ]
        if qy.segments:
            lines += [
                f"| segment (at {qy.previous_date}) | users | HR@{qy.k} | NDCG@{qy.k} | popularity HR@{qy.k} |",
                "|---|---|---|---|---|",
                *[
                    f"| {g['segment']} | {g['users']:,} | {g['hr']:.4f} | {g['ndcg']:.4f} | {g['popularity_hr']:.4f} |"
                    for g in qy.segments
                ],
                "",
            ]
    elif qy is not None:
        lines += [f"Next-day quality: nothing to score ({qy.note or 'no user active on both days'}).", ""]
    if qy is not None and qy.alerts:
        lines += ["**Alerts:**", *[f"- {a}" for a in qy.alerts], ""]
    if "quality_figure" in files:
        lines += ["![quality](quality.png)", ""]
    lines += ["Timings (s): " + ", ".join(f"{k} {v}" for k, v in report.timings_s.items()), ""]
    (out / "report.md").write_text("\n".join(lines))
    return files


def track(cfg: Config, report: NightlyReport) -> None:
    """The night as one MLflow run: stage timings, gate results, drift, next-day quality, alerts."""
    e, q, d = report.embed, report.quality, report.drift
    tags = {"date": report.date, "table": report.table, "model_version": report.model.version}
    with tracking.track(cfg, "nightly", f"nightly dt={report.date}", tags) as run:
        run.params({"date": report.date, "encoder": report.encoder, "model": report.model.action})
        gates = {
            f"gate.{p.table}.{name}": float(g.ok)
            for p in (e.users, e.items, e.recommendations)
            for name, g in p.gates.items()
        }
        s = report.sessionize
        counts = {"rows_in": s.rows_in, "events_kept": s.events_kept, "users": s.users, "published": e.rows}
        run.metrics({"timings_s": report.timings_s, "counts": counts, **gates})
        if d is not None:
            run.metrics({"drift": {k: getattr(d, k) for k in ("users_in_both", "mean_cosine", "top_interest_changed")}})
        if q is not None:
            run.metrics(
                {"next_day": {k: getattr(q, k) for k in ("users", "hr", "ndcg", "popularity_hr", "popularity_ndcg")}}
            )
            run.tags({"alerts": "; ".join(q.alerts) or "none"})
        run.tags({"report": report.report_files.get("markdown")})
