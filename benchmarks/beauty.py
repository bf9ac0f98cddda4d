"""Amazon Beauty (5-core, as published with S3-Rec): full ranking beside published figures.

    python benchmarks/beauty.py [--seeds 1 2 3] [--encoders self_attention ...]
                                [--data ../shared/data/amazon-beauty/Beauty.txt] [--set key=value ...]
                                [--models-only]

Sessionizes the file with ``conf/beauty.yaml`` (any file of the same form: ``--data``), trains each
encoder once per seed, and prints the test split the way the field reports it: leave-one-out,
the target ranked against every item the user has not interacted with, targets the vocabulary
does not know counted as misses; HR and NDCG at 10 and 20 as the mean of the training seeds with
a 95 % t-interval over them. Popularity and item co-occurrence (settings picked on validation)
stand beside the encoders, the published figures on the same file below them, and 100 sampled
negatives as a second column only. Everything lives under the profile's ``paths.root`` (or
``--set paths.root=...``); models are reused by a later run with the same settings
(``bench-models.json`` there), and the sessionized file by a run with the same ``sessionize``
settings (a run with others, ``--set sessionize.max_len=20``, needs its own ``paths.root``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, table  # noqa: E402

sys.path.insert(0, str(ROOT))
DATE = "2000-01-01"  # any date after the synthetic times (event k of a user on day k after 1970)
DEFAULT_DATA = os.environ.get("BEAUTY_PATH", str(ROOT.parent / "shared" / "data" / "amazon-beauty" / "Beauty.txt"))
CUTS = (10, 20)

# Published full-ranking figures on exactly this file: HR@10, NDCG@10, HR@20, NDCG@20
PUBLISHED = [
    ("SASRec, original loss (TIGER; ICLRec)", 0.0605, 0.0318, 0.0894, 0.0386),
    ("SASRec, full cross-entropy (RecBole)", 0.083, 0.0415, 0.1191, 0.0506),
    ("BSARec (AAAI 2024, repository log)", 0.1008, 0.0611, 0.1373, 0.0703),
]


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def interval(values: list[float]) -> str:
    """mean ± the half-width of a 95 % t-interval over the seeds."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return f"{v.mean():.4f}"
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return f"{v.mean():.4f} ± {half:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--encoders", nargs="+", default=["self_attention"])
    parser.add_argument("--data", default=DEFAULT_DATA, help="a sequence_lines file (default: $BEAUTY_PATH)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="a profile override")
    parser.add_argument(
        "--models-only", action="store_true", help="train (or reuse) the models and stop: no baselines, no table"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")  # epochs
    if not Path(args.data).exists():
        print(f"skipped: {args.data} is not there (set BEAUTY_PATH or --data; the file is not ours to ship)")
        return

    from interest.config import VALID_SEED, load_config
    from interest.etl.sessionize import run_sessionize
    from interest.evaluation import evaluate as ev
    from interest.layout import Layout
    from interest.models.export import load_model
    from interest.spark import get_spark
    from interest.training.run import train_and_export

    base = [f"ingest.path={Path(args.data).resolve()}", *args.overrides]
    cfg = load_config(ROOT / "conf" / "beauty.yaml", base)
    print(machine())
    layout = Layout.of(cfg, DATE)
    # the sessionized file is reused by a later run: only with the same sessionize settings
    made_with = Path(cfg.paths.base) / "bench-sessionize.json"
    settings = json.dumps({"data": str(Path(args.data).resolve()), **dataclasses.asdict(cfg.sessionize)}, default=str)
    if made_with.exists() and made_with.read_text() != settings:
        sys.exit(f"{cfg.paths.base} was sessionized with other settings ({made_with}): give this run a paths.root")
    if not Path(layout.sessionized.summary).exists():
        spark = get_spark(cfg, "interest-beauty")
        try:
            s = run_sessionize(spark, cfg, DATE)
        finally:
            spark.stop()
        log(f"sessionized: {s.users:,} users, {s.items_seen:,} items")
        made_with.write_text(settings)

    manifest = Path(cfg.paths.base) / "bench-models.json"
    known: dict[str, str] = json.loads(manifest.read_text()) if manifest.exists() else {}
    models: dict[str, list] = {}
    for encoder in args.encoders:
        for seed in args.seeds:
            key = json.dumps([encoder, seed, base])
            if key not in known or not Path(known[key], "encoder.json").exists():
                run_cfg = load_config(
                    ROOT / "conf" / "beauty.yaml", [*base, f"model.encoder={encoder}", f"train.seed={seed}"]
                )
                out = train_and_export(run_cfg, DATE)
                known[key] = str(out.model_dir)
                manifest.write_text(json.dumps(known, indent=1))
                c = out.metrics["test_counted"]
                log(
                    f"{encoder} seed {seed}: best epoch {out.metrics['best_epoch']}, HR@10 {c['full_hr@10']:.4f} "
                    f"NDCG@10 {c['full_ndcg@10']:.4f} (full, counted), {out.metrics['train_seconds']:.0f} s"
                )
            models.setdefault(encoder, []).append(load_model(known[key]))
    if args.models_only:
        return

    data = ev.load_eval_data(cfg, layout)
    e = cfg.eval
    baselines = ev.baselines(data, e.sampled_negatives, VALID_SEED)
    headline = {r["model"]: r for r in ev.headline(baselines, {}, data, e.k, e.sampled_negatives, tuple(e.seeds))}
    head = ["model", *[f"{m}@{c}" for c in CUTS for m in ("HR", "NDCG")], "HR@10 (100 neg)", "s / epoch", "best epoch"]
    rows: list[list[Any]] = []
    for name in ("popularity", "co-occurrence"):
        c, t = headline[name]["test_counted"], headline[name]["test"]
        rows.append(
            [
                name,
                *[f"{c[f'full_{m}@{k}']:.4f}" for k in CUTS for m in ("hr", "ndcg")],
                f"{t['sampled_hr@10']:.4f}",
                "–",
                "–",
            ]
        )
    for encoder, group in models.items():
        counted = [m.metrics["test_counted"] for m in group]
        cells = [interval([c[f"full_{m}@{k}"] for c in counted]) for k in CUTS for m in ("hr", "ndcg")]
        sampled = interval([m.metrics["test"]["sampled_hr@10"] for m in group])
        per_epoch = np.mean([m.metrics["train_seconds"] / max(m.metrics["epochs_run"], 1) for m in group])
        epochs = ", ".join(str(m.metrics["best_epoch"]) for m in group)
        rows.append([f"{encoder} ({len(group)} seeds)", *cells, sampled, f"{per_epoch:.1f}", epochs])
    for name, *figures in PUBLISHED:
        rows.append([f"published: {name}", *[f"{x:.4f}" for x in figures], "–", "–", "–"])
    first = headline["popularity"]["test_counted"]
    users, unknown = int(first["users"] + first["excluded_targets"]), int(first["excluded_targets"])
    print(
        f"\n## {Path(args.data).name}: full ranking, leave-one-out, {users:,} users "
        f"({unknown} test targets outside the vocabulary counted as misses)\n"
    )
    print(table(head, rows))


if __name__ == "__main__":
    main()
