"""The multi-target protocol (ComiRec): several future items per user, the whole catalogue ranked.

    python benchmarks/multi_target.py --dataset ml100k|beauty [--seeds 1 2 3]
                                      [--encoders self_attention memory] [--lambdas 0 0.05 ...]
                                      [--work DIR] [--data PATH] [--set key=value ...] [--json FILE]

Each user's history is cut in time order (``interest.scoring.multitarget``): the first 80 % is
written as the log the pipeline sessionizes and trains on; the rest are that user's targets,
which no model ever sees. Every user is a test user. Each scorer's top 50 of the whole catalogue,
with the input's items removed, is scored by Recall@20/50, HR@20/50 and NDCG@50 (targets outside
the vocabulary are misses) and, where items have categories, Diversity@50. The scorers:

- self-attention's user vector (the product's single-vector retrieval);
- memory, interests merged: each kept interest retrieves its own top 50 and the lists merge as
  the embed stage merges them (``embed.multi_interest``), at each diversity factor λ;
- memory's user vector alone (``embed.multi_interest: false``);
- item co-occurrence (settings picked on leave-one-out validation) and popularity.

An encoder may carry its own overrides after a colon (``memory:model.interest_routing=true``).
Memory models are also read over each user's whole stored history (``sessionize.max_windows``
windows, ``MemoryEncoder.read_windows``) instead of the latest ``max_len`` steps, and every
scorer is broken down by history length: the users over ``max_len`` steps are the ones the window
cuts.

Figures are per user means over the training seeds, with a 95 % bootstrap interval over users,
and paired differences against self-attention. A picture of Recall@50 against Diversity@50 as λ
grows is written next to ``--json`` (or in the work folder). Models are reused by a later run
with the same settings (``models.json`` in ``--work``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, table  # noqa: E402

sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
DATASETS: dict[str, dict[str, Any]] = {
    "ml100k": {"profile": "ml100k.yaml", "env": "ML100K_DIR", "default": SHARED / "ml-100k", "date": "1998-04-22"},
    "beauty": {
        "profile": "beauty.yaml",
        "env": "BEAUTY_PATH",
        "default": SHARED / "amazon-beauty" / "Beauty.txt",
        "date": "2000-01-01",
    },
}
CUTS = (20, 50)
N = max(CUTS)
LAMBDAS = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)
REFERENCE = "self_attention"


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def split_ml100k(source: Path, out: Path) -> tuple[list[str], dict[str, list[str]]]:
    """u.data cut per user in time order (ties in file order): the input as u.data, the targets."""
    from interest.scoring.multitarget import split_point

    ratings = pd.read_csv(source / "u.data", sep="\t", names=["user", "item", "rating", "ts"], dtype=str)
    ratings["order"] = np.arange(len(ratings))
    ratings = ratings.sort_values(["user", "ts", "order"], key=lambda c: c.astype(np.int64), kind="stable")
    ratings["step"] = ratings.groupby("user").cumcount()
    cut = ratings.groupby("user")["step"].transform(lambda s: split_point(len(s)))
    inputs, targets = ratings[ratings["step"] < cut], ratings[ratings["step"] >= cut]
    out.mkdir(parents=True, exist_ok=True)
    inputs[["user", "item", "rating", "ts"]].to_csv(out / "u.data", sep="\t", header=False, index=False)
    overrides = [f"ingest.path={out / 'u.data'}", f"ingest.item_categories={source / 'u.item'}"]
    return overrides, {u: list(g["item"]) for u, g in targets.groupby("user", sort=False)}


def split_lines(source: Path, out: Path) -> tuple[list[str], dict[str, list[str]]]:
    """A sequence_lines file ("user item item ...", in order) cut per line."""
    from interest.scoring.multitarget import split_point

    out.mkdir(parents=True, exist_ok=True)
    targets: dict[str, list[str]] = {}
    with open(source) as src, open(out / source.name, "w") as dst:
        for line in src:
            user, *items = line.split()
            if not items:
                continue
            cut = split_point(len(items))
            dst.write(" ".join([user, *items[:cut]]) + "\n")
            if items[cut:]:
                targets[user] = items[cut:]
    return [f"ingest.path={out / source.name}"], targets


class Run:
    """One dataset's split, sessionized pipeline and trained models under ``work``."""

    def __init__(self, name: str, source: Path, work: Path, overrides: list[str]) -> None:
        self.spec, self.work = DATASETS[name], work
        split = split_ml100k if name == "ml100k" else split_lines
        inputs, self.targets = split(source, work / "input")
        self.base = [f"paths.root={work / 'data'}", *inputs, *overrides]
        self.manifest = work / "models.json"
        self.models: dict[str, str] = json.loads(self.manifest.read_text()) if self.manifest.exists() else {}

    def config(self, *extra: str):
        from interest.config import load_config

        return load_config(ROOT / "conf" / self.spec["profile"], [*self.base, *extra])

    def sessionize(self) -> None:
        from interest.etl.sessionize import run_sessionize
        from interest.layout import Layout
        from interest.spark import get_spark

        cfg = self.config("embed.table_format=parquet")
        if Path(Layout.of(cfg, self.spec["date"]).sessionized.summary).exists():
            return
        spark = get_spark(cfg, "interest-multi-target")
        try:
            s = run_sessionize(spark, cfg, self.spec["date"])
        finally:
            spark.stop()
        log(f"sessionized the first 80 %: {s.users:,} users, {s.items_seen:,} items")

    def model(self, variant: str, seed: int):
        """A trained model of ``variant``: an encoder name, optionally with its own overrides after
        a colon (``memory:model.interest_routing=true``)."""
        from interest.models.export import load_model
        from interest.training.run import train_and_export

        encoder, *extra = variant.split(":")
        key = json.dumps([encoder, seed, self.base, *extra])
        if key not in self.models or not Path(self.models[key], "encoder.json").exists():
            cfg = self.config(f"model.encoder={encoder}", f"train.seed={seed}", *extra)
            out = train_and_export(cfg, self.spec["date"])
            m = out.metrics
            log(f"trained {encoder} seed {seed}: best epoch {m['best_epoch']}, {m['train_seconds']:.0f} s")
            self.models[key] = str(out.model_dir)
            self.manifest.write_text(json.dumps(self.models, indent=1))
        return load_model(self.models[key])


def score(lists: np.ndarray, targets: list[np.ndarray], codes: np.ndarray | None) -> dict[str, np.ndarray]:
    from interest.scoring.multitarget import category_diversity, target_metrics

    out = target_metrics(lists, targets, CUTS)
    if codes is not None:
        out[f"diversity@{N}"] = category_diversity(lists, codes, N)
    return out


def mean_over_seeds(runs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {m: np.mean([r[m] for r in runs], 0) for m in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="ml100k")
    parser.add_argument("--data", default=None, help="default: $ML100K_DIR / $BEAUTY_PATH or ../shared/data")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--encoders", nargs="+", default=["self_attention", "memory"])
    parser.add_argument("--lambdas", nargs="+", type=float, default=list(LAMBDAS))
    parser.add_argument("--work", default=None, help="keeps data and models; a re-run reuses them")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")  # epochs
    spec = DATASETS[args.dataset]
    source = Path(args.data or os.environ.get(spec["env"]) or spec["default"])
    if not source.exists():
        print(f"skipped: {source} is not there (set {spec['env']} or --data; the data is not ours to ship)")
        return
    work = Path(args.work or tempfile.mkdtemp(prefix=f"interest-multi-target-{args.dataset}-"))
    print(f"machine: {machine()}\nwork: {work}\n", flush=True)
    started = time.perf_counter()

    from interest.config import VALID_SEED
    from interest.data.files import load_rows, stored_windows
    from interest.evaluation import evaluate as ev
    from interest.layout import Layout
    from interest.models.retrieval import Retrieval, category_codes
    from interest.scoring.segments import estimate, format_estimate, paired_difference

    run = Run(args.dataset, source, work, args.overrides)
    run.sessionize()
    models = {e: [run.model(e, s) for s in args.seeds] for e in args.encoders}
    cfg = run.config()
    layout = Layout.of(cfg, spec["date"])
    data = ev.load_eval_data(cfg, layout, users=0)
    rows = load_rows(layout.sessionized.infer)  # every user's latest window of the input
    data = replace(data, rows=rows)
    index = dict(zip(data.vocab["item_id"].astype(str), data.vocab["item_idx"].astype(np.int64)))
    from interest.scoring.multitarget import split_targets

    seen = list(rows.get("history_idx", rows["item_idx"]))
    users = rows["user_id"].astype(str)
    raw = [[index.get(i, -1) for i in run.targets.get(u, [])] for u in users]
    targets = split_targets(raw, seen)
    has = np.array([len(t) > 0 for t in targets])
    labels = None
    if "category" in data.vocab and data.vocab["category"].notna().any():
        labels = np.array(["<none>"] * data.vocab_size, dtype=object)
        first = data.vocab["category"].fillna("<none>").astype(str).str.split("|").str[0]  # a film's first genre
        labels[data.vocab["item_idx"].to_numpy()] = first.to_numpy()
    codes = None if labels is None else np.where(labels == "<none>", -1, category_codes(labels))
    unknown, total = sum(int((t < 0).sum()) for t in targets), sum(len(t) for t in targets)
    log(f"{has.sum():,} users with targets, {total:,} targets ({unknown:,} outside the vocabulary)")

    # every stored window (the training rows keep max_windows per user; their newest is the inference row)
    windows = stored_windows(layout.sessionized.train, users)
    steps = rows["n_steps"]
    max_len = rows["item_idx"].shape[1]
    per: dict[str, dict[str, np.ndarray]] = {}
    interests_used: dict[str, list[float]] = {}
    baselines = ev.baselines(data, cfg.eval.sampled_negatives, VALID_SEED)
    for name in ("popularity", "co-occurrence"):
        per[name] = score(ev.recommended_lists(baselines[name][0], data, N), targets, codes)
    curves: dict[str, dict[float, list[dict[str, np.ndarray]]]] = {}  # per memory variant, per λ
    for variant, group in models.items():
        label = display(variant)
        single, every, whole = [], [], {}
        for model in group:
            table_ = np.asarray(model.encoder.item_table)
            one, _ = ev.published_lists(model.encoder, table_, rows, N, Retrieval(multi_interest=False))
            single.append(score(one, targets, codes))
            if model.encoder.kind != "memory" or model.encoder.args["memory_slots"] < 2:
                continue
            for lam in args.lambdas:
                lists, kept = ev.published_lists(model.encoder, table_, rows, N, Retrieval(diversity=lam), labels)
                curves.setdefault(label, {}).setdefault(lam, []).append(score(lists, targets, codes))
                if lam == 0.0:
                    interests_used.setdefault(label, []).append(float(np.mean(kept)))
            lists, kept = ev.published_lists(model.encoder, table_, rows, N, Retrieval(min_weight=0.0))
            every.append(score(lists, targets, codes))
            interests_used.setdefault(f"{label}, every interest", []).append(float(np.mean(kept)))
            for name, rules in (("user vector", Retrieval(multi_interest=False)), ("interests merged", Retrieval())):
                lists, _ = ev.published_lists(model.encoder, table_, rows, N, rules, windows=windows)
                whole.setdefault(name, []).append(score(lists, targets, codes))
        per[f"{label}, user vector" if every else label] = mean_over_seeds(single)
        if every:
            if 0.0 in curves[label]:
                per[f"{label}, interests merged"] = mean_over_seeds(curves[label][0.0])
            per[f"{label}, every interest merged"] = mean_over_seeds(every)
            for name, runs in whole.items():
                per[f"{label}, whole history, {name}"] = mean_over_seeds(runs)
        log(f"ranked {label}")

    metrics = [m for m in per["popularity"]]
    head = ["scorer", *metrics]
    cell = lambda v, m: format_estimate(estimate(v[m][has & np.isfinite(v[m])]), 4)  # noqa: E731
    out_rows = [[name, *[cell(v, m) for m in metrics]] for name, v in per.items()]
    print(f"\n## {args.dataset}: multi-target, first 80 % in, the rest targets; {has.sum():,} users, "
          f"{total:,} targets ({unknown:,} outside the vocabulary, misses); "
          f"training seeds {args.seeds}; mean [95 % bootstrap interval over users]\n")  # fmt: skip
    print(table(head, out_rows))
    if interests_used:
        used = ", ".join(f"{k} {np.mean(v):.2f}" for k, v in interests_used.items())
        print(f"\ninterests that retrieve per user (mean, λ = 0): {used}")
    ref = "self-attention" if "self-attention" in per else None
    if ref:
        print(f"\n### Paired per user against {ref} (* = the interval excludes 0)\n")
        rows_ = []
        for name, v in per.items():
            if name == ref:
                continue
            cells = []
            for m in metrics:
                ok = has & np.isfinite(v[m]) & np.isfinite(per[ref][m])
                d = paired_difference(v[m][ok], per[ref][m][ok])
                cells.append(format_estimate(d, 4) + (" *" if d["lo"] > 0 or d["hi"] < 0 else ""))
            rows_.append([f"{name} − {ref}", *cells])
        print(table(["difference", *metrics], rows_))
    segments = [
        (f"up to {max_len // 4} steps", steps <= max_len // 4),
        (f"{max_len // 4 + 1} to {max_len} steps", (steps > max_len // 4) & (steps <= max_len)),
        (f"over {max_len} steps (the window cuts them)", steps > max_len),
    ]
    print(f"\n### By history length: Recall@{N}, mean [95 % interval over users]\n")
    seg_rows = []
    for name, v in per.items():
        seg_rows.append([name, *[format_estimate(estimate(v[f"recall@{N}"][mask & has]), 4) for _, mask in segments]])
    print(table(["scorer", *[f"{s} ({int((m & has).sum())} users)" for s, m in segments]], seg_rows))
    if ref:
        long = has & (steps > max_len)
        print(f"\nPaired against {ref} on the {int(long.sum())} users over {max_len} steps (Recall@{N}):")
        for name, v in per.items():
            if name.startswith("memory"):
                d = paired_difference(v[f"recall@{N}"][long], per[ref][f"recall@{N}"][long])
                print(f"  {name} − {ref}: {format_estimate(d, 4)}{' *' if d['lo'] > 0 or d['hi'] < 0 else ''}")
    points: dict[str, list[tuple[float, float, float]]] = {}
    for label, curve in curves.items():
        lam_rows = []
        for lam, runs in curve.items():
            v = mean_over_seeds(runs)
            rec = estimate(v[f"recall@{N}"][has])
            div = estimate(v[f"diversity@{N}"][np.isfinite(v[f"diversity@{N}"])]) if codes is not None else None
            points.setdefault(label, []).append((lam, rec["mean"], div["mean"] if div else float("nan")))
            lam_rows.append([f"{lam:g}", format_estimate(rec, 4), format_estimate(div, 4) if div else "–"])
        print(f"\n### {label}, interests merged: the diversity factor λ\n")
        print(table(["λ", f"Recall@{N}", f"Diversity@{N}"], lam_rows))
    if codes is not None and points:
        picture = Path(args.json).with_suffix(".png") if args.json else work / "lambda.png"
        plot_curve(points, per, picture)
        print(f"\npicture: {picture}")
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    if args.json:
        summary = {name: {m: estimate(v[m][has & np.isfinite(v[m])]) for m in metrics} for name, v in per.items()}
        Path(args.json).write_text(json.dumps({"scorers": summary, "lambda": points, "seeds": args.seeds}, indent=1))


def display(variant: str) -> str:
    """``memory:model.interest_routing=true`` -> ``memory (model.interest_routing=true)``."""
    name, _, extra = variant.partition(":")
    name = name.replace("_", "-")
    return f"{name} ({extra.replace(':', ', ')})" if extra else name


def plot_curve(points: dict[str, list[tuple[float, float, float]]], per: dict[str, dict[str, np.ndarray]], path: Path):
    """Recall@50 against Diversity@50 along λ for each memory variant; the other scorers as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, curve in points.items():
        ax.plot([p[2] for p in curve], [p[1] for p in curve], "o-", label=f"{label}, interests merged")
        for lam, rec, div in curve:
            ax.annotate(f"λ={lam:g}", (div, rec), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for name, v in per.items():
        if "merged" not in name:
            ax.plot(np.nanmean(v[f"diversity@{N}"]), np.nanmean(v[f"recall@{N}"]), "s", label=name)
    ax.set_xlabel(f"Diversity@{N} (share of pairs in different categories)")
    ax.set_ylabel(f"Recall@{N}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
