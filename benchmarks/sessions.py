"""Next item within a session, on data with several sessions per user: the hierarchical encoder
against self-attention, memory and session-kNN with reminders.

    python benchmarks/sessions.py [--data generated ml100k] [--seeds 1 2 3] [--users 4000] [--work DIR]
                                  [--ml100k ../shared/data/ml-100k] [--figures docs/figures]

The leave-one-out test target of every user with at least 3 sessions up to it, new to the user,
split by whether it continues the session of the step before it ("within a session", where a
session-aware model should win) or opens a new one; re-visited targets apart (the protocol leaves
a re-visited target as the user's only item among the candidates, which flatters reminders). Full
ranking, unknown targets counted as misses, each encoder the mean of its training seeds with a
95 % bootstrap interval over users, paired differences per user.

- generated: ``conf/local.yaml`` with ``--users`` users; every session follows one of the user's
  1-3 planted interests (``interest.synth``), so the current session says which one is active now.
- ml100k: ``conf/ml100k.yaml``; a session is one sitting of ratings (30-minute gap). Models are
  those of ``benchmarks/ml100k.py`` (the same ``--work`` reuses them).

Settings of session-kNN (neighbours, extension by the previous session, weight of reminders) are
picked on validation. Models and data stay under ``--work``; a re-run reuses them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, table  # noqa: E402
from ml100k import BASELINES, ENCODERS, END, Work, against, evaluate, fmt, log, models_by_encoder  # noqa: E402

sys.path.insert(0, str(ROOT))
from interest.evaluation.breakdown import REVISITS, SESSION_SEGMENTS  # noqa: E402

SEGMENTS = ("all users", *SESSION_SEGMENTS, REVISITS)
REFERENCES = ("self_attention", "session-kNN")


def generated(work: Path, users: int, seeds: list[int], encoders: list[str]) -> tuple[Any, Any, dict]:
    """Generate, sessionize and train on ``conf/local.yaml`` with ``users`` users."""
    from interest.config import load_generator_config
    from interest.synth import generate

    w = Work(work, [], profile="local.yaml")
    overrides = [f"generator.users={users}"]
    gen = load_generator_config(ROOT / "conf" / "local.yaml", overrides)
    cfg = w.config("gen")
    if not Path(cfg.paths.truth).exists():
        summary = generate(gen, cfg.paths.raw_events, cfg.paths.truth)
        log(f"generated {summary.events:,} events of {users:,} users")
    w.sessionize("gen", gen.end_date)
    return w, gen.end_date, models_by_encoder(w, "gen", gen.end_date, encoders, seeds, [])


def movielens(work: Path, data: Path, seeds: list[int], encoders: list[str]) -> tuple[Any, Any, dict]:
    """The leave-one-out models of ``benchmarks/ml100k.py`` (trained here when absent)."""
    if not (data / "u.data").is_file():
        sys.exit(f"MovieLens 100K not found at {data} (pass --ml100k or set ML100K_DIR)")
    w = Work(work, [f"ingest.path={data / 'u.data'}", f"ingest.item_categories={data / 'u.item'}"])
    w.sessionize("loo", END)
    return w, END, models_by_encoder(w, "loo", END, encoders, seeds, [])


def report(name: str, result: dict[str, Any], seeds: list[int], figures: Path | None) -> None:
    """The session segments: every scorer, then the encoders paired against the references."""
    from interest.evaluation.report import plot_segments

    b = result["breakdown"]
    for scorer, settings in result.get("settings", {}).items():
        print(f"{name}: {scorer} picked on validation: {settings}")
    segments = [s for s in b.segments if s.name in SEGMENTS]
    b.segments = segments
    if figures is not None:
        figures.mkdir(parents=True, exist_ok=True)
        path = plot_segments(
            b, "full_hr", f"HR@10 (full ranking) per segment, {name}", figures / f"sessions_{name}.png"
        )
        print(f"figure: {path}")
    for metric in ("full_hr", "full_ndcg"):
        head = ["segment", "users", *b.scorers]
        rows = []
        for seg in segments:
            est = {s: b.estimate(s, seg, metric) for s in b.scorers}
            rows.append([seg.name, f"{max(e['n'] for e in est.values()):,}", *[fmt(est[s]) for s in b.scorers]])
        label = "HR@10" if metric == "full_hr" else "NDCG@10"
        print(f"\n### {name}: {label} (full ranking), mean of seeds {seeds} [95 % interval over users]\n")
        print(table(head, rows))
    encoders = [s for s in b.scorers if s not in BASELINES]
    for reference in REFERENCES:
        others = [e for e in encoders if e != reference] + (["session-kNN"] if reference != "session-kNN" else [])
        print(f"\n### {name}: against {reference}, paired per user (* = outside the interval)\n")
        print(table(*against(b, reference, others, ["full_hr", "full_ndcg"])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["generated", "ml100k"], choices=["generated", "ml100k"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--encoders", nargs="+", default=ENCODERS)
    parser.add_argument("--users", type=int, default=4000, help="generated users")
    parser.add_argument("--work", default=None, help="keeps data and models; a re-run reuses them")
    parser.add_argument("--figures", type=Path, default=None, help="write sessions_<data>.png here")
    parser.add_argument(
        "--ml100k", default=os.environ.get("ML100K_DIR", str(ROOT.parent / "shared" / "data" / "ml-100k"))
    )
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="interest-sessions-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}\nwork: {work}\n", flush=True)

    from interest.evaluation.evaluate import load_eval_data
    from interest.layout import Layout

    started = time.perf_counter()
    for name in args.data:
        if name == "generated":
            w, date, models = generated(work, args.users, args.seeds, args.encoders)
            cfg = w.config("gen")
        else:
            w, date, models = movielens(work, Path(args.ml100k), args.seeds, args.encoders)
            cfg = w.config("loo")
        data = load_eval_data(cfg, Layout.of(cfg, date))
        data.tasks = {n: t for n, t in data.tasks.items() if n in ("valid", "test")}
        report(name, evaluate(cfg, data, models, with_extras=False), args.seeds, args.figures)
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
