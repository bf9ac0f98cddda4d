"""Benchmark training throughput per encoder at two sequence lengths, and the input pipeline alone.

    python benchmarks/training.py --users 4000 --lengths 50 200 --epochs 3
    python benchmarks/training.py --users 4000 --lengths 50 200 --input-only

Data: a generated clickstream sessionized twice (max_len 50 and 200). Training throughput is the
real Trainer (Petastorm -> tf.data -> custom loop, full softmax, batch 128, d=64, 2 blocks),
sequences/s averaged over the epochs after the first (which includes tracing). The input pipeline
is Petastorm alone (rows/s over a full epoch, batch 128, no model) against reading the same files
directly with pyarrow into numpy; if Petastorm's rate is far above the training rate, input never
limits training.
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


def petastorm_rate(path: str, spec, batch: int, repeats: int = 3) -> float:
    from interest.data.files import count_rows
    from interest.data.reader import petastorm_batches

    rows, rates = count_rows(path), []
    for _ in range(repeats):
        tic = time.perf_counter()
        with petastorm_batches(path, spec, batch, epochs=1, shuffle=True, drop_remainder=False) as ds:
            n = sum(int(b["item_idx"].shape[0]) for b in ds)
        rates.append(n / (time.perf_counter() - tic))
        assert n == rows
    return statistics.median(rates)


def pyarrow_rate(path: str, repeats: int = 3) -> float:
    from interest.data.files import load_rows
    from interest.schema import SEQUENCE_FEATURES

    rates = []
    for _ in range(repeats):
        tic = time.perf_counter()
        rows = load_rows(path, columns=list(SEQUENCE_FEATURES))
        rates.append(len(rows["item_idx"]) / (time.perf_counter() - tic))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--work", default=None)
    parser.add_argument("--input-only", action="store_true", help="measure the input pipeline only (no training)")
    args = parser.parse_args()

    from interest.config import load_config
    from interest.data.files import SequenceSpec, SessionizePaths
    from interest.etl.pipeline import run_sessionize
    from interest.training.run import train_and_export

    work = Path(args.work or tempfile.mkdtemp(prefix="interest-train-bench-"))
    base = [
        f"paths.root={work}",
        f"generator.users={args.users}",
        "generator.days=14",
        "spark.conf={spark.ui.enabled: 'false', spark.sql.shuffle.partitions: '8', spark.driver.memory: '4g'}",
    ]
    cfg, spark = generated_clickstream(base, "interest-train-bench")
    pipeline_rows, train_rows = [], []
    for length in args.lengths:
        at_length = [
            f"sessionize.max_len={length}",
            f"paths.sequences='{{root}}/sequences_{length}'",
            f"paths.vocab='{{root}}/vocab_{length}'",
        ]
        lcfg = load_config(ROOT / "conf" / "local.yaml", base + at_length)
        summary = run_sessionize(spark, lcfg, DATE)
        path = SessionizePaths.for_date(lcfg, DATE).train
        spec = SequenceSpec.from_config(lcfg, summary.vocab_size)
        peta, arrow = petastorm_rate(path, spec, 128), pyarrow_rate(path)
        pipeline_rows.append(
            [length, f"{summary.train_users:,}", f"{peta:,.0f}", f"{arrow:,.0f}", f"{arrow / peta:.1f}x"]
        )
        print(
            table(["max_len", "rows", "Petastorm rows/s", "pyarrow rows/s", "pyarrow / Petastorm"], pipeline_rows[-1:]),
            flush=True,
        )
        for encoder in () if args.input_only else ("self_attention", "hierarchical", "memory"):
            tcfg = load_config(
                ROOT / "conf" / "local.yaml",
                base
                + at_length
                + [
                    f"model.encoder={encoder}",
                    f"train.epochs={args.epochs}",
                    "train.patience=100",
                    "eval.seeds=[1]",
                    f"paths.models='{{root}}/models_{length}'",
                ],
            )
            out = train_and_export(tcfg, DATE)
            later = [h["sequences_per_s"] for h in out.metrics["history"][1:]] or [
                out.metrics["history"][0]["sequences_per_s"]
            ]
            rate = statistics.mean(later)
            train_rows.append(
                [encoder, length, f"{rate:,.0f}", f"{peta / rate:.0f}x", f"{out.metrics['history'][-1]['seconds']:.1f}"]
            )
            print(
                table(["encoder", "max_len", "train seq/s", "Petastorm headroom", "s/epoch"], train_rows[-1:]),
                flush=True,
            )
    spark.stop()
    print(
        f"\nmachine: {machine()}; TensorFlow on CPU, batch 128, d=64, 2 blocks, full softmax, "
        f"{args.users:,} generated users\n"
    )
    print("Input pipeline alone (one epoch of the train rows, batch 128):\n")
    print(table(["max_len", "rows", "Petastorm rows/s", "pyarrow rows/s", "pyarrow / Petastorm"], pipeline_rows))
    print(
        "\nTraining throughput (epochs after the first), and how many times faster Petastorm "
        "alone delivers rows than training consumes them:\n"
    )
    print(table(["encoder", "max_len", "train seq/s", "Petastorm headroom", "s/epoch"], train_rows))


if __name__ == "__main__":
    main()
