"""Benchmark training throughput per encoder at two sequence lengths, and the input pipeline alone.

    python benchmarks/training.py --users 4000 --lengths 50 200 --epochs 3 [--set train.batch_size=512]
    python benchmarks/training.py --users 100000 --lengths 50 200 --input-only --work DIR [--reuse]

Data: a generated clickstream sessionized twice (max_len 50 and 200). Training throughput is the
real Trainer (Petastorm -> tf.data -> custom loop, full softmax, batch 128, d=64, 2 blocks),
sequences/s averaged over the epochs after the first (which includes tracing), and the FLOP/s
that rate achieves beside the machine's peak (``flops.py``: each row's forward and backward work
at its own length). The input pipeline
is Petastorm alone (one stream of 3 epochs, batch 128, shuffled, no model; steady rows/s with the
start-up apart) against reading the same files row group by row group with pyarrow into [n, L]
NumPy arrays; if Petastorm's rate is far above the training rate, input never limits training.
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
from flops import flops_per_row, peak_fp32, row_lengths, step_flops  # noqa: E402

sys.path.insert(0, str(ROOT))
DATE = "2026-11-26"
PIPELINE_HEADER = [
    "max_len",
    "rows",
    "Petastorm rows/s",
    "start-up s",
    "all-in rows/s",
    "pyarrow rows/s",
    "Petastorm / pyarrow",
]


def petastorm_rate(path: str, spec, batch: int, epochs: int = 3, repeats: int = 5) -> tuple[float, float, float]:
    """(steady rows/s, start-up s, all-in rows/s) of ``epochs`` epochs of one Petastorm stream.

    Training opens one endless reader per run and streams every epoch through it, so the steady rate (from
    the first batch to the last) is what a training loop sees; start-up (reader, tf.data graph,
    first row group) is paid once per run. Medians over ``repeats`` streams.
    """
    from interest.data.files import count_rows
    from interest.data.reader import petastorm_batches

    rows, runs = count_rows(path), []
    for _ in range(repeats):
        tic = time.perf_counter()
        first, n = None, 0
        with petastorm_batches(path, spec, batch, epochs=None, shuffle=True) as ds:  # as training reads
            for b in ds:
                if first is None:
                    first, n0 = time.perf_counter(), int(b["item_idx"].shape[0])
                n += int(b["item_idx"].shape[0])
                if n >= rows * epochs:
                    break
        end = time.perf_counter()
        runs.append(((n - n0) / (end - first), first - tic, n / (end - tic)))
    return tuple(statistics.median(r[i] for r in runs) for i in range(3))  # type: ignore[return-value]


def pyarrow_rate(path: str, repeats: int = 5) -> float:
    """Rows/s of the plainest fast read: each row group with pyarrow, each sequence column as its
    flat values reshaped to [n, L] (no shuffling, no batching): the ceiling for any reader."""
    import numpy as np
    import pyarrow.parquet as pq

    from interest.schema import SEQUENCE_FEATURES

    files = sorted(Path(path).rglob("*.parquet"))
    rates = []
    for _ in range(repeats):
        tic, n = time.perf_counter(), 0
        for f in files:
            pf = pq.ParquetFile(f)
            for g in range(pf.metadata.num_row_groups):
                t = pf.read_row_group(g, columns=list(SEQUENCE_FEATURES))
                cols = {
                    c: np.asarray(t.column(c).combine_chunks().flatten()).reshape(t.num_rows, -1)  # [n, L]
                    for c in SEQUENCE_FEATURES
                }
                n += len(cols["item_idx"])
        rates.append(n / (time.perf_counter() - tic))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--work", default=None)
    parser.add_argument("--encoders", nargs="+", default=["self_attention", "hierarchical", "memory"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="training settings, key=value")
    parser.add_argument("--input-only", action="store_true", help="measure the input pipeline only (no training)")
    parser.add_argument(
        "--reuse", action="store_true", help="with --input-only and --work: read the sequences sessionized there"
    )
    args = parser.parse_args()
    if args.reuse and not (args.input_only and args.work):
        parser.error("--reuse needs --input-only and --work")

    from interest.config import load_config
    from interest.data.files import SequenceSpec, count_rows
    from interest.etl.sessionize import run_sessionize
    from interest.layout import Layout
    from interest.training.run import train_and_export

    work = Path(args.work or tempfile.mkdtemp(prefix="interest-train-bench-"))
    base = [
        f"paths.root={work}",
        f"generator.users={args.users}",
        "generator.days=14",
        "spark.conf={spark.ui.enabled: 'false', spark.sql.shuffle.partitions: '16', spark.driver.memory: '6g'}",
    ]
    spark = None if args.reuse else generated_clickstream(base, "interest-train-bench")[1]
    pipeline_rows, train_rows = [], []
    peak = peak_fp32()
    train_header = ["encoder", "max_len", "train seq/s", "Petastorm headroom", "s/epoch", "GFLOP/s", "of peak"]
    train_header += ["test NDCG@10"]  # full ranking: a faster setting must not cost quality
    for length in args.lengths:
        at_length = [
            f"sessionize.max_len={length}",
            f"paths.root={work}/len_{length}",  # its own sequences and vocabulary
            f"ingest.path={work}/raw/events",
        ]
        lcfg = load_config(ROOT / "conf" / "local.yaml", base + at_length)
        vocab_size = 0 if spark is None else run_sessionize(spark, lcfg, DATE).vocab_size  # the reader ignores it
        path = Layout.of(lcfg, DATE).sessionized.train
        spec = SequenceSpec.from_config(lcfg, vocab_size)
        (peta, startup, all_in), arrow = petastorm_rate(path, spec, 128), pyarrow_rate(path)
        pipeline_rows.append(
            [length, f"{count_rows(path):,}", f"{peta:,.0f}", f"{startup:.2f}", f"{all_in:,.0f}", f"{arrow:,.0f}"]
            + [f"{peta / arrow:.2f}x"]
        )
        print(table(PIPELINE_HEADER, pipeline_rows[-1:]), flush=True)
        lengths = row_lengths(path)
        for encoder in () if args.input_only else args.encoders:
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
                    *args.overrides,
                ],
            )
            out = train_and_export(tcfg, DATE)
            later = [h["sequences_per_s"] for h in out.metrics["history"][1:]] or [
                out.metrics["history"][0]["sequences_per_s"]
            ]
            rate = statistics.mean(later)
            gflops = rate * flops_per_row(step_flops(tcfg, spec), lengths) / 1e9
            seconds = out.metrics["history"][-1]["seconds"]
            train_rows.append(
                [encoder, length, f"{rate:,.0f}", f"{peta / rate:.0f}x", f"{seconds:.1f}", f"{gflops:.1f}"]
                + [f"{gflops / peak.gflops:.1%}", f"{out.metrics['test_counted']['full_ndcg@10']:.4f}"]
            )
            print(table(train_header, train_rows[-1:]), flush=True)
    if spark is not None:
        spark.stop()
    print(
        f"\nmachine: {machine()}; TensorFlow on CPU, batch 128, d=64, 2 blocks, full softmax, "
        f"{args.users:,} generated users{''.join('; ' + o for o in args.overrides)}\n"
        f"peak: {peak.gflops:.0f} GFLOP/s = {peak.how}\n"
    )
    print("Input pipeline alone (one stream of 3 epochs of the train rows, batch 128, shuffled; median of 5):\n")
    print(table(PIPELINE_HEADER, pipeline_rows))
    print(
        "\nTraining throughput (epochs after the first), and how many times faster Petastorm "
        "alone delivers rows than training consumes them:\n"
    )
    print(table(train_header, train_rows))


if __name__ == "__main__":
    main()
