"""Benchmark distributed training: 1 vs 2 Spark barrier workers on this machine.

    python benchmarks/distributed.py --users 8000 --epochs 6 --target 0.25

Both runs go through the same barrier-stage launcher on local[2] with the same global batch (so
the same optimisation); each worker is a separate TensorFlow process with its task's cores.
Reported: training sequences/s (epochs after the first), seconds per epoch, and wall time until
validation NDCG@10 (full ranking) first reaches ``--target``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, generated_clickstream, machine, table  # noqa: E402

sys.path.insert(0, str(ROOT))
DATE = "2026-11-26"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--target", type=float, default=0.25)
    parser.add_argument("--encoder", default="self_attention")
    parser.add_argument("--work", default=None)
    args = parser.parse_args()

    from interest.config import load_config
    from interest.etl.sessionize import run_sessionize
    from interest.training.distributed import train_on_spark

    work = Path(args.work or tempfile.mkdtemp(prefix="interest-dist-bench-"))
    base = [
        f"paths.root={work}",
        f"generator.users={args.users}",
        "generator.days=14",
        f"model.encoder={args.encoder}",
        f"train.epochs={args.epochs}",
        "train.patience=100",
        "train.batch_size=256",
        "eval.seeds=[1]",
        "sessionize.min_row_groups=16",
        "spark.conf={spark.ui.enabled: 'false', spark.sql.shuffle.partitions: '8', spark.driver.memory: '4g'}",
    ]
    cfg, spark = generated_clickstream(base, "interest-dist-bench")
    summary = run_sessionize(spark, cfg, DATE)
    rows = []
    for workers in (1, 2):
        wcfg = load_config(
            ROOT / "conf" / "local.yaml",
            base + [f"train.workers={workers}", f"paths.models='{{root}}/models_{workers}'"],
        )
        tic = time.perf_counter()
        out = train_on_spark(spark, wcfg, DATE)
        wall = time.perf_counter() - tic
        hist = out.metrics["history"]
        rate = statistics.mean(h["sequences_per_s"] for h in hist[1:]) if len(hist) > 1 else hist[0]["sequences_per_s"]
        elapsed, reached = 0.0, None
        for h in hist:
            elapsed += h["seconds"]
            if reached is None and h.get("valid_full_ndcg@10", 0) >= args.target:
                reached = (h["epoch"], elapsed)
        rows.append(
            [
                workers,
                f"{rate:,.0f}",
                f"{statistics.mean(h['seconds'] for h in hist[1:]):.1f}",
                f"{reached[1]:.0f} (epoch {reached[0]})"
                if reached
                else f"not reached ({hist[-1]['valid_full_ndcg@10']:.3f})",
                f"{out.metrics['test']['full_ndcg@10']:.4f}",
                f"{wall:.0f}",
            ]
        )
        print(table(HEAD, rows[-1:]), flush=True)
    spark.stop()
    print(
        f"\nmachine: {machine()}; local[2], {summary.train_users:,} training sequences "
        f"(max_len {cfg.sessionize.max_len}), {args.encoder}, global batch 256, {args.epochs} epochs\n"
    )
    print(table(HEAD, rows))


HEAD = ["workers", "train seq/s", "s/epoch", "s to valid NDCG@10 target", "test NDCG@10", "job wall s"]

if __name__ == "__main__":
    main()
