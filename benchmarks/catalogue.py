"""Full against sampled softmax on a large catalogue: time per epoch and quality.

    python benchmarks/catalogue.py --users 15000 --items 50000 --epochs 4

A generated clickstream with ``--items`` items (14 days), sessionized at max_len 50, trains
self-attention (the default profile: d=64, 2 heads, 2 blocks, batch 128) once per objective on
the same sequences: the full softmax over every item, and sampled softmax (in-batch and uniform
negatives with log-Q correction, ``train.num_negatives``), which ``train.objective: auto`` picks
above ``train.sampled_above_items``. Seconds per epoch are the mean after the first (which traces
the step); quality is the test split at the best validation epoch, full ranking over the whole
catalogue and against 100 sampled negatives (seed 1).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, generated_clickstream, machine, table  # noqa: E402

sys.path.insert(0, str(ROOT))
DATE = "2026-11-26"
HEAD = ["objective", "items", "train rows", "s/epoch", "seq/s", "best epoch", "HR@10", "NDCG@10", "HR@10 (100 neg)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=15000)
    parser.add_argument("--items", type=int, default=50000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--categories", type=int, default=20)
    parser.add_argument("--sessions-per-day", type=float, default=0.9, help="generator.sessions_per_day")
    parser.add_argument("--session-views", type=float, default=6.0, help="generator.mean_session_views")
    parser.add_argument(
        "--runs",
        nargs="+",
        default=["full_softmax", "sampled_softmax"],
        help="one training run each: an objective, then optional ',key=value' overrides "
        "(e.g. sampled_softmax,train.batch_by_length=true)",
    )
    parser.add_argument("--set", action="append", default=[], help="more overrides for every run (key=value)")
    parser.add_argument("--work", default=None)
    args = parser.parse_args()

    from interest.config import load_config
    from interest.etl.sessionize import run_sessionize
    from interest.training.run import train_and_export

    work = Path(args.work or tempfile.mkdtemp(prefix="interest-catalogue-"))
    base = [
        f"paths.root={work}",
        f"generator.users={args.users}",
        f"generator.items={args.items}",
        f"generator.categories={args.categories}",
        f"generator.sessions_per_day={args.sessions_per_day}",
        f"generator.mean_session_views={args.session_views}",
        "generator.days=14",
        "sessionize.max_len=50",
        "sessionize.min_item_count=1",
        "spark.conf={spark.ui.enabled: 'false', spark.sql.shuffle.partitions: '8', spark.driver.memory: '4g'}",
        *args.set,
    ]
    cfg, spark = generated_clickstream(base, "interest-catalogue-bench")
    summary = run_sessionize(spark, cfg, DATE)
    spark.stop()
    rows = []
    for number, spec in enumerate(args.runs):
        objective, *extra = spec.split(",")
        tcfg = load_config(
            ROOT / "conf" / "local.yaml",
            base
            + [
                f"train.objective={objective}",
                f"train.epochs={args.epochs}",
                "train.patience=100",
                "eval.seeds=[1]",
                f"paths.models='{{root}}/models_{number}'",
                *extra,
            ],
        )
        out = train_and_export(tcfg, DATE)
        m, test = out.metrics, out.metrics["test"]
        later = m["history"][1:] or m["history"]
        rows.append(
            [
                " ".join([m["objective"], *extra]),
                f"{summary.vocab_size - 2:,}",
                f"{m['train_rows']:,}",
                f"{statistics.mean(h['seconds'] for h in later):.1f}",
                f"{statistics.mean(h['sequences_per_s'] for h in later):,.0f}",
                m["best_epoch"],
                f"{test['full_hr@10']:.4f}",
                f"{test['full_ndcg@10']:.4f}",
                f"{test.get('sampled_hr@10', float('nan')):.4f}",
            ]
        )
        print(table(HEAD, rows[-1:]), flush=True)
    pop = m["popularity"]["test"]
    print(
        f"\nmachine: {machine()}; {args.users:,} generated users, {summary.events_kept:,} events kept, "
        f"max_len 50, {args.epochs} epochs; "
        f"popularity: HR@10 {pop['full_hr@10']:.4f}, NDCG@10 {pop['full_ndcg@10']:.4f}\n"
    )
    print(table(HEAD, rows))


if __name__ == "__main__":
    main()
