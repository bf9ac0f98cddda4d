"""MovieLens 100K: what each encoder is for. Every encoder over several training seeds, beside
popularity and item co-occurrence, per segment, on a temporal split, with new items, beyond
accuracy and faithful explanations.

    python benchmarks/ml100k.py [--seeds 1 2 3] [--encoders ...] [--work DIR] [--set key=value ...]
                                [--cut 1997-12-31] [--no-temporal] [--ml100k ../shared/data/ml-100k]

1. Leave-one-out (the protocol of the SASRec paper, as this project reports it): sessionized with
   ``conf/ml100k.yaml`` (genres from u.item as categories), each encoder trained once per seed,
   test HR@10 / NDCG@10 with full ranking and with 100 sampled negatives; per segment (history
   length, drifting users, cold-start replays) with a 95 % bootstrap interval over users of the
   mean over seeds; beyond accuracy; deletion and sufficiency of the explanations.
2. Temporal: a global cut T (``--cut``): sessionized and trained on everything up to T; the first
   new item of each returning user after T (to the end of the log) and every new item in the 7
   days after T; items first seen after T ranked with their cold-start vectors, random vectors,
   or left out; the time-gap feature on and off (MovieLens has one event type, so the event-type
   feature has nothing to say here).

Models are kept under ``--work`` and reused by a later run with the same settings (``models.json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, table  # noqa: E402

sys.path.insert(0, str(ROOT))
END = "1998-04-22"  # the last day of the log
ENCODERS = ["self_attention", "hierarchical", "memory"]
BASELINES = ["popularity", "co-occurrence", "session-kNN"]
METRICS = {
    "full_hr": "HR@10 (full)",
    "full_ndcg": "NDCG@10 (full)",
    "sampled_hr": "HR@10 (100 neg)",
    "sampled_ndcg": "NDCG@10 (100 neg)",
}


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


class Work:
    """The run's folder: one data root per protocol, trained models reused by settings."""

    def __init__(self, path: Path, base: list[str], profile: str = "ml100k.yaml") -> None:
        self.path, self.base, self.profile = path, base, profile
        self.manifest = path / "models.json"
        self.models: dict[str, str] = json.loads(self.manifest.read_text()) if self.manifest.exists() else {}

    def config(self, root: str, *extra: str):
        from interest.config import load_config

        return load_config(ROOT / "conf" / self.profile, [f"paths.root={self.path / root}", *self.base, *extra])

    def sessionize(self, root: str, date: str, base_vocab: str | None = None) -> None:
        from interest.etl.sessionize import run_sessionize
        from interest.layout import Layout
        from interest.spark import get_spark

        cfg = self.config(root)
        if Path(Layout.of(cfg, date).sessionized.summary).exists():
            return
        spark = get_spark(cfg, "interest-ml100k")
        try:
            s = run_sessionize(spark, cfg, date, base_vocab=base_vocab)
        finally:
            spark.stop()
        log(f"sessionized {root} at {date}: {s.users} users, {s.items_seen} items, {s.sessions:,} sessions")

    def train(self, root: str, date: str, encoder: str, seed: int, extra: list[str]) -> str:
        from interest.training.run import train_and_export

        key = json.dumps([root, date, encoder, seed, self.base, extra])
        if key in self.models and Path(self.models[key], "encoder.json").exists():
            return self.models[key]
        cfg = self.config(root, f"model.encoder={encoder}", f"train.seed={seed}", *extra)
        out = train_and_export(cfg, date)
        m = out.metrics
        log(
            f"trained {encoder} seed {seed} {' '.join(extra)} on {root} {date}: best epoch {m['best_epoch']}, "
            f"test HR@10 (100 neg) {m['test']['sampled_hr@10']:.4f}, {m['train_seconds']:.0f} s"
        )
        self.models[key] = str(out.model_dir)
        self.manifest.write_text(json.dumps(self.models, indent=1))
        return str(out.model_dir)


def models_by_encoder(work: Work, root: str, date: str, encoders, seeds, extra: list[str]) -> dict[str, list]:
    from interest.models.export import load_model

    return {e: [load_model(work.train(root, date, e, s, extra)) for s in seeds] for e in encoders}


def evaluate(cfg, data, models: dict[str, list], with_extras: bool = True) -> dict[str, Any]:
    """Everything the evaluation stage measures, for grouped models (one group per encoder)."""
    from interest.config import VALID_SEED
    from interest.evaluation import evaluate as ev
    from interest.evaluation.breakdown import build_breakdown

    e = cfg.eval
    scorers: dict[str, Any] = {
        **ev.encoder_scorers(models, data),
        **ev.baselines(data, e.sampled_negatives, VALID_SEED),
    }
    scorers = {name: scorers[name] for name in [*BASELINES, *models]}
    tasks = {n: t for n, t in data.tasks.items() if n != "valid"}
    breakdown = build_breakdown(
        scorers, tasks, data.vocab_size, data.categories, e.k, e.sampled_negatives, tuple(e.seeds)
    )
    out: dict[str, Any] = {"breakdown": breakdown, "scorers": list(scorers)}
    out["settings"] = {n: g[0].settings for n, g in scorers.items() if getattr(g[0], "settings", None)}
    if "test" in tasks:  # leave-one-out; the temporal split's targets are in its segments
        out["headline"] = ev.headline(scorers, models, data, e.k, e.sampled_negatives, tuple(e.seeds))
    if with_extras:
        log("beyond accuracy")
        out["beyond"] = ev.beyond_accuracy(scorers, data, e.k)
        if "memory" in models:
            out["slot_purity"] = ev.slot_purity(models["memory"], data)
        log("faithfulness")
        out["faithfulness"] = {name: ev.faithfulness(group, data) for name, group in models.items()}
    if "temporal_first" in tasks:
        out["new_items"] = ev.new_item_table(models, data, e.k, e.sampled_negatives, tuple(e.seeds))
    return out


def fmt(e: dict[str, Any], digits: int = 3) -> str:
    from interest.scoring.segments import format_estimate

    return format_estimate(e, digits)


def which_encoder_table(b, metric: str) -> tuple[list[str], list[list[str]]]:
    """Per segment: every scorer's mean [interval], and the best one, marked * when its paired lead
    over the runner-up excludes 0."""
    head = ["segment", "users", *b.scorers, "best"]
    rows = []
    for seg in b.segments:
        est = {s: b.estimate(s, seg, metric) for s in b.scorers}
        users = max(e["n"] for e in est.values())
        if not users:
            continue
        ranked = sorted(b.scorers, key=lambda s: -est[s]["mean"])
        lead = b.compare(ranked[0], ranked[1], seg, metric)
        best = ranked[0] + (" *" if lead["lo"] > 0 else "")
        rows.append([seg.name, f"{users:,}", *[fmt(est[s]) for s in b.scorers], best])
    return head, rows


def against(b, reference: str, others: list[str], metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    """Paired differences of ``others`` against ``reference`` per segment and metric (marked * where
    the interval excludes 0)."""
    head = ["segment", "metric", *[f"{o} − {reference}" for o in others]]
    rows = []
    for seg in b.segments:
        for metric in metrics:
            cells = []
            for o in others:
                d = b.compare(o, reference, seg, metric)
                mark = " *" if d["n"] and (d["lo"] > 0 or d["hi"] < 0) else ""
                cells.append(fmt(d) + mark if d["n"] else "–")
            if any(c != "–" for c in cells):
                rows.append([seg.name, METRICS[metric], *cells])
    return head, rows


def print_loo(result: dict[str, Any], seeds: list[int]) -> None:
    b = result["breakdown"]
    head = ["model", "HR@10", "NDCG@10", "HR@20", "NDCG@20", "HR@10 (100 neg)", "NDCG@10 (100 neg)", "seed std"]
    rows = []
    for r in result["headline"]:
        c = r["test_counted"]
        rows.append(
            [
                r["model"],
                *[f"{c[f'full_{m}@{k}']:.4f}" for k in (10, 20) for m in ("hr", "ndcg")],
                f"{c['sampled_hr@10']:.4f}",
                f"{c['sampled_ndcg@10']:.4f}",
                f"{c.get('sampled_hr@10_seed_std', 0):.4f}" if "sampled_hr@10_seed_std" in c else "–",
            ]
        )
    t0 = result["headline"][0]["test_counted"]
    print(f"\n## Leave-one-out, mean of training seeds {seeds}: full ranking, {t0['users'] + t0['excluded_targets']} "
          f"users, the {t0['excluded_targets']} with a target outside the vocabulary counted as misses\n")  # fmt: skip
    print(table(head, rows))
    for metric, name in METRICS.items():
        print(f"\n### Which encoder for what: {name}, mean [95 % interval over users]; * = lead over the runner-up "
              "outside its paired interval\n")  # fmt: skip
        print(table(*which_encoder_table(b, metric)))
    encoders = [s for s in b.scorers if s not in BASELINES]
    if "self_attention" in encoders and len(encoders) > 1:
        print("\n### Hierarchical and memory against self-attention (paired per user; * = outside the interval)\n")
        print(table(*against(b, "self_attention", [e for e in encoders if e != "self_attention"], list(METRICS))))
    print("\n### Attention against item co-occurrence (paired per user; * = outside the interval)\n")
    print(table(*against(b, "co-occurrence", encoders, ["full_hr", "sampled_hr"])))
    print("\n### Beyond accuracy: the top-10 lists the embed job publishes\n")
    rows = []
    for name, x in result["beyond"].items():
        rows.append([name, f"{x['coverage@10']:.3f}", fmt(x.get("diversity", {})), fmt(x["novelty"], 2)])
    print(table(["model", "coverage@10", "intra-list diversity", "novelty (bits)"], rows))
    p = result.get("slot_purity")
    if p:
        print(f"\nmemory slot purity {fmt(p['purity'])} against {fmt(p['shuffled'])} with the assignment shuffled "
              f"(paired difference {fmt(p['difference'])})")  # fmt: skip
    print(
        "\n### Faithfulness: attention against random and most-recent steps (paired per user; > 0 = attention wins)\n"
    )
    rows = []
    for name, f in result["faithfulness"].items():
        for kind in ("deletion", "sufficiency"):
            rows.append([name, kind, f"{f['users']:,}", *[fmt(v, 4) for v in f[kind].values()]])
    cols = list(next(iter(result["faithfulness"].values()))["deletion"])
    print(table(["encoder", "test", "users", *cols], rows))


def print_temporal_group(label: str, result: dict[str, Any]) -> None:
    """One way of training (the time-gap feature off or on): the encoders beside the baselines."""
    b = result["breakdown"]
    print(f"\n### {label}: HR@10 (100 neg) and HR@10 (full), mean [95 % interval]\n")
    for metric in ("full_hr", "sampled_hr"):
        head, rows = which_encoder_table(b, metric)
        print(f"{METRICS[metric]}\n")
        print(table(head, rows))
        print(flush=True)


def print_temporal(results: dict[str, dict[str, Any]]) -> None:
    """New items and the time-gap feature, once both groups are measured."""
    first = next(iter(results.values()))
    if first.get("new_items"):
        print("\n### New items (first seen after T): cold-start vectors, random vectors, left out; HR@10 (full)\n")
        modes = [m for m in first["new_items"][0] if m not in ("task", "model", "new item targets", "targets")]
        rows = [
            [r["task"], r["model"], f"{r['targets']:,}", f"{r['new item targets']:,}", *[fmt(r[m]) for m in modes]]
            for r in first["new_items"]
        ]
        print(table(["task", "model", "targets", "new-item targets", *modes], rows))
    if len(results) > 1:
        (a_label, a), (b_label, b) = list(results.items())[:2]
        print(f"\n### Time-gap feature: {b_label} − {a_label}, paired per user (* = outside the interval)\n")
        rows = []
        encoders = [s for s in a["breakdown"].scorers if s not in BASELINES]
        for seg in a["breakdown"].segments:
            for metric in ("full_hr", "sampled_hr"):
                cells = []
                for enc in encoders:
                    d = paired_feature_difference(b["breakdown"], a["breakdown"], enc, seg, metric)
                    mark = " *" if d["n"] and (d["lo"] > 0 or d["hi"] < 0) else ""
                    cells.append(fmt(d) + mark if d["n"] else "–")
                rows.append([seg.name, METRICS[metric], *cells])
        print(table(["segment", "metric", *encoders], rows))


def paired_feature_difference(with_b, without_b, scorer: str, seg, metric: str) -> dict[str, Any]:
    """The same scorer family trained two ways, on the same targets: per-user paired difference."""
    from interest.scoring.segments import paired_difference, per_user

    keep = seg.mask & with_b.ranked[scorer][seg.task] & without_b.ranked[scorer][seg.task]
    users = with_b.tasks[seg.task].user[keep]
    a = per_user(with_b.values[scorer][seg.task][metric][keep], users)
    c = per_user(without_b.values[scorer][seg.task][metric][keep], users)
    return paired_difference(a, c)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ml100k", default=os.environ.get("ML100K_DIR", str(ROOT.parent / "shared" / "data" / "ml-100k"))
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="training seeds")
    parser.add_argument("--temporal-seeds", nargs="+", type=int, default=None, help="default: --seeds")
    parser.add_argument("--encoders", nargs="+", default=ENCODERS)
    parser.add_argument("--work", default=None, help="keeps data and models; a re-run reuses them")
    parser.add_argument("--cut", default="1997-12-31", help="the temporal split's cut T")
    parser.add_argument("--no-temporal", action="store_true")
    parser.add_argument("--no-loo", action="store_true", help="only the temporal split")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", default=None, help="write every figure here")
    args = parser.parse_args()
    data_dir = Path(args.ml100k)
    if not (data_dir / "u.data").is_file():
        sys.exit(f"MovieLens 100K not found at {data_dir} (pass --ml100k or set ML100K_DIR)")
    work = Path(args.work or tempfile.mkdtemp(prefix="interest-ml100k-"))
    work.mkdir(parents=True, exist_ok=True)
    base = [f"ingest.path={data_dir / 'u.data'}", f"ingest.item_categories={data_dir / 'u.item'}", *args.overrides]
    w = Work(work, base)
    print(f"machine: {machine()}\nwork: {work}\n", flush=True)

    from interest.evaluation.evaluate import add_temporal, load_eval_data
    from interest.layout import Layout

    started = time.perf_counter()
    everything: dict[str, Any] = {}
    if not args.no_loo:
        w.sessionize("loo", END)
        models = models_by_encoder(w, "loo", END, args.encoders, args.seeds, [])
        cfg = w.config("loo")
        everything["loo"] = loo = evaluate(cfg, load_eval_data(cfg, Layout.of(cfg, END)), models)
        print_loo(loo, args.seeds)
    if not args.no_temporal:
        week = (dt.date.fromisoformat(args.cut) + dt.timedelta(days=7)).isoformat()
        w.sessionize("temporal", args.cut)
        vocab = str(work / "temporal" / "vocab" / f"dt={args.cut}")
        w.sessionize("temporal", week, base_vocab=vocab)
        w.sessionize("temporal", END, base_vocab=vocab)
        tcfg = w.config("temporal")
        temporal_seeds = args.temporal_seeds or args.seeds
        results = {}
        for label, extra in (("time gaps off (the profile)", []), ("time gaps on", ["model.features=[time_gap]"])):
            group = models_by_encoder(w, "temporal", args.cut, args.encoders, temporal_seeds, extra)
            cut = Layout.of(tcfg, args.cut)
            data = add_temporal(cut, load_eval_data(tcfg, cut), END, week)
            data.tasks = {n: t for n, t in data.tasks.items() if n == "valid" or n.startswith("temporal")}
            results[label] = evaluate(tcfg, data, group, with_extras=False)
            if len(results) == 1:
                print(f"\n## Temporal split at T = {args.cut} (trained up to T), training seeds {temporal_seeds}")
            print_temporal_group(label, results[label])
        print_temporal(results)
        everything["temporal"] = results
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(everything), indent=1, default=str))


def to_json(x: Any) -> Any:
    from interest.evaluation.breakdown import Breakdown

    if isinstance(x, Breakdown):
        return x.to_dict()
    if isinstance(x, dict):
        return {k: to_json(v) for k, v in x.items()}
    if isinstance(x, list):
        return [to_json(v) for v in x]
    return x


if __name__ == "__main__":
    main()
