"""MovieLens 100K under the SASRec paper's protocol: all three encoders beside popularity.

    python benchmarks/ml100k.py [--epochs N] [--set key=value ...] [--ml100k ../shared/data/ml-100k]

Sessionized by this project (conf/ml100k.yaml: every rating an interaction, all items kept,
maxlen 200), temporal leave-one-out, d=50, 2 blocks, 1 head, dropout 0.2, the profile's batch,
precision and epochs (``--epochs`` overrides them), keeping the best validation HR@10. Test metrics
with full ranking and with 100 distinct sampled negatives (mean ± std over seeds 1, 2, 3; validation
draws its own seed).
A model-free id-adjacency rule is reported as a leakage sentinel (see interest.evaluation.leakage).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, table  # noqa: E402

sys.path.insert(0, str(ROOT))
DATE = "1998-04-22"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ml100k", default=os.environ.get("ML100K_DIR", str(ROOT.parent / "shared" / "data" / "ml-100k"))
    )
    parser.add_argument("--epochs", type=int, default=None, help="default: the profile's train.epochs")
    parser.add_argument("--encoders", nargs="+", default=["self_attention", "hierarchical", "memory"])
    parser.add_argument("--work", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    udata = Path(args.ml100k) / "u.data"
    if not udata.is_file():
        sys.exit(f"MovieLens 100K not found at {udata} (pass --ml100k or set ML100K_DIR)")

    from interest.config import load_config
    from interest.etl.pipeline import run_sessionize
    from interest.spark import get_spark
    from interest.training.run import train_and_export

    work = Path(args.work or tempfile.mkdtemp(prefix="interest-ml100k-"))
    base = [f"paths.root={work}", f"ingest.path={udata}"]
    if args.epochs is not None:
        base += [f"train.epochs={args.epochs}", f"train.patience={args.epochs}"]
    base += args.overrides
    cfg = load_config(ROOT / "conf" / "ml100k.yaml", base)
    args.epochs = cfg.train.epochs
    spark = get_spark(cfg, "interest-ml100k")
    summary = run_sessionize(spark, cfg, DATE)
    spark.stop()
    print(
        f"sessionized: {summary.rows_in:,} rows, {summary.users} users, "
        f"{summary.items_seen} items, {summary.sessions:,} sessions",
        flush=True,
    )
    rows, pop = [], None
    for encoder in args.encoders:
        ecfg = load_config(ROOT / "conf" / "ml100k.yaml", base + [f"model.encoder={encoder}"])
        out = train_and_export(ecfg, DATE)
        m = out.metrics
        t = m["test"]
        pop = m["popularity"]["test"]
        rows.append(
            [
                encoder,
                m["best_epoch"],
                m["epochs_run"],
                f"{m['train_seconds'] / 60:.1f}",
                f"{t['full_hr@10']:.4f}",
                f"{t['full_ndcg@10']:.4f}",
                f"{t['full_mrr']:.4f}",
                f"{t['sampled_hr@10']:.4f} ± {t['sampled_hr@10_std']:.4f}",
                f"{t['sampled_ndcg@10']:.4f} ± {t['sampled_ndcg@10_std']:.4f}",
            ]
        )
        print(table(HEAD, rows[-1:]), flush=True)
    if pop:
        from interest.data.files import load_rows, read_vocab
        from interest.evaluation.leakage import id_adjacency_metrics

        vocab = read_vocab(summary.outputs.vocab).sort_values("item_idx")
        rule = id_adjacency_metrics(
            ["<pad>", "<unknown>", *vocab.item_id.astype(str)], load_rows(summary.outputs.infer)
        )
        rows.append(
            [
                "popularity",
                "–",
                "–",
                "–",
                f"{pop['full_hr@10']:.4f}",
                f"{pop['full_ndcg@10']:.4f}",
                f"{pop['full_mrr']:.4f}",
                f"{pop['sampled_hr@10']:.4f} ± {pop['sampled_hr@10_std']:.4f}",
                f"{pop['sampled_ndcg@10']:.4f} ± {pop['sampled_ndcg@10_std']:.4f}",
            ]
        )
        rows.append(
            [
                "id adjacency (leakage sentinel)",
                "–",
                "–",
                "–",
                f"{rule['full_hr@10']:.4f}",
                f"{rule['full_ndcg@10']:.4f}",
                f"{rule['full_mrr']:.4f}",
                f"{rule['sampled_hr@10']:.4f} ± {rule['sampled_hr@10_std']:.4f}",
                f"{rule['sampled_ndcg@10']:.4f} ± {rule['sampled_ndcg@10_std']:.4f}",
            ]
        )
    print(
        f"\nmachine: {machine()}; MovieLens 100K, {args.epochs} epochs max; "
        f"{pop['users'] if pop else '?'} test users ranked, "
        f"{pop['excluded_targets'] if pop else '?'} excluded (test item outside the vocabulary)\n"
    )
    print(table(HEAD, rows))


HEAD = ["model", "best epoch", "epochs", "train min", "HR@10", "NDCG@10", "MRR", "HR@10 (100 neg)", "NDCG@10 (100 neg)"]

if __name__ == "__main__":
    main()
