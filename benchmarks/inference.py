"""Batch inference at scale: steady-state users/s of the embed stage, start-up apart, and top-N.

    python benchmarks/inference.py --users 50000 100000 200000 400000 --items 80000

The embed stage's own work on a generated population: ``embed_users`` (the ``mapInArrow`` that
loads the model once per Python worker, encodes each Arrow batch, explains it and ranks the item
table) over N users' inference rows, forced with Spark's ``noop`` sink, in one local[2] session.
Users have 1..max_len steps (geometric, mean ~20) over ``--items`` items, as the 50M-event
generated log has (403k users, 80,642 items). Inference cost does not depend on what the weights
learned, so the model is a freshly initialised self-attention encoder of the default profile's
shape (d=64, 2 heads, 2 blocks), exported like a trained one.

Steady state is the slope between the two largest sizes (more users over more seconds), so the
fixed cost (Python workers starting, TensorFlow imported, the model loaded and traced in each)
is the intercept, reported apart. Peak RSS is the summed resident memory of this process tree
(driver, JVM, Python workers) during each size. The top-N table times one batch of users
against the whole item table: the blocked form the job uses beside one user at a time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, PeakRSS, machine, table  # noqa: E402

sys.path.insert(0, str(ROOT))
DATE = "2026-11-26"


def write_rows(path: Path, users: int, items: int, max_len: int, seed: int) -> None:
    """Inference rows of ``users`` generated users, in row groups of 50,000 (several files)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():  # a re-run with the same --work reuses its rows
        return
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    for part, start in enumerate(range(0, users, 50_000)):
        n = min(50_000, users - start)
        length = np.minimum(rng.geometric(1 / 20, n), max_len)  # [n]
        pos = np.arange(max_len)[None]  # [1, L]
        real = pos >= max_len - length[:, None]  # [n, L], left-padded
        picks = (rng.zipf(1.3, (n, max_len)) % items + 2).astype(np.int32)
        item_idx = np.where(real, picks, 0).astype(np.int32)
        ones = real.astype(np.int32)
        session = np.where(real, 1 + (pos - (max_len - length[:, None])) // 5, 0).astype(np.int32)

        def lists(a: np.ndarray) -> pa.Array:
            return pa.FixedSizeListArray.from_arrays(pa.array(a.ravel()), max_len).cast(pa.list_(pa.int32()))

        hist = pa.ListArray.from_arrays(
            pa.array(np.concatenate([[0], np.cumsum(length)]).astype(np.int32)), pa.array(item_idx[real])
        )
        frame = pa.table(
            {
                "user_id": pa.array([f"u{start + i}" for i in range(n)]),
                "item_idx": lists(item_idx),
                "event_type_idx": lists(ones),
                "time_gap_bucket": lists(ones),
                "session_idx": lists(session),
                "n_steps": pa.array(length.astype(np.int32)),
                "n_events": pa.array(length.astype(np.int64)),
                "history_idx": hist,
            }
        )
        pq.write_table(frame, path / f"part-{part:04d}.parquet", row_group_size=10_000)


def per_user_top_n(scores: np.ndarray, histories: list[np.ndarray], n: int) -> list[np.ndarray]:
    """The previous form, for the comparison: one user at a time."""
    out = []
    for i, hist in enumerate(histories):
        s = scores[i].copy()
        s[:2] = -np.inf
        s[hist[hist >= 2]] = -np.inf
        best = np.argpartition(-s, n)[:n]
        out.append(best[np.argsort(-s[best], kind="stable")])
    return out


def one_top_k(users: np.ndarray, table: np.ndarray, histories: list[np.ndarray], n: int = 20) -> np.ndarray:
    """The previous blocked form, for the comparison: per 256 users one matrix product and one
    ``top_k`` over every item for n + (the longest history) candidates; seen ones dropped after."""
    import tensorflow as tf

    k = n + max(len(h) for h in histories)
    candidates = tf.constant(table[2:])
    out = []
    for start in range(0, len(users), 256):
        top = tf.math.top_k(tf.matmul(tf.constant(users[start : start + 256]), candidates, transpose_b=True), k)
        for row, hist in zip(top.indices.numpy() + 2, histories[start : start + 256]):
            out.append(row[~np.isin(row, hist)][:n])
    return np.array(out, dtype=object)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[50_000, 100_000, 200_000, 400_000])
    parser.add_argument("--items", type=int, default=80_000)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--top-n", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="interest-inference-"))

    import pandas as pd

    from interest.config import load_config
    from interest.models.encoders import build_encoder
    from interest.models.export import load_model, save_model
    from interest.scoring.topn import top_n_unseen
    from interest.serving.inference import embed_users
    from interest.spark import get_spark

    vocab_size = args.items + 2
    idx = np.arange(2, vocab_size)
    vocab = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in idx],
            "item_idx": idx.astype(np.int32),
            "count": (1e6 / (idx - 1) ** 1.1).astype(np.int64),
            "category": [f"c{i % 200}" for i in idx],
        }
    )
    encoder = build_encoder("self_attention", vocab_size=vocab_size, max_len=args.max_len, dim=64, heads=2, blocks=2)
    model_dir = save_model(encoder, vocab, {"date": DATE}, {}, str(work / "models"), f"{DATE}_bench")
    model = load_model(model_dir)
    for n in args.users:
        write_rows(work / f"rows_{n}", n, args.items, args.max_len, seed=n)

    cfg = load_config(
        ROOT / "conf" / "local.yaml",
        [f"paths.root={work}", "spark.conf={spark.ui.enabled: 'false', spark.driver.memory: '4g'}"],
    )
    spark = get_spark(cfg, "interest-inference-bench")
    spark.sparkContext.setLogLevel("ERROR")
    measured = []
    for n in args.users:
        rows = spark.read.parquet(str(work / f"rows_{n}"))
        out = embed_users(spark, rows, model, vocab, 5, args.top_n, 5, args.batch_size)
        with PeakRSS(__import__("os").getpid()) as rss:
            tic = time.perf_counter()
            out.write.format("noop").mode("overwrite").save()
            seconds = time.perf_counter() - tic
        measured.append((n, seconds, rss.peak, rows.rdd.getNumPartitions()))
        print(f"{n:,} users: {seconds:.1f} s, peak RSS {rss.peak / 2**30:.2f} GiB", flush=True)
    spark.stop()

    (n1, t1, _, _), (n2, t2, _, _) = measured[-2], measured[-1]
    steady = (n2 - n1) / max(t2 - t1, 1e-9)
    startup = t2 - n2 / steady
    rows_out = [[f"{n:,}", parts, f"{s:.1f}", f"{n / s:,.0f}", f"{rss / 2**30:.2f}"] for n, s, rss, parts in measured]
    print(
        f"\nmachine: {machine()}; local[2]; {args.items:,} items, max_len {args.max_len}, "
        f"batch {args.batch_size}, top {args.top_n}\n"
    )
    print(table(["users", "files read as partitions", "embed s", "users/s (all in)", "peak RSS GiB"], rows_out))
    print(
        f"\nsteady state ({measured[-2][0]:,} -> {measured[-1][0]:,} users): {steady:,.0f} users/s; "
        f"fixed cost (intercept): {startup:.1f} s"
    )

    rng = np.random.default_rng(0)
    users = rng.normal(size=(args.batch_size, 64)).astype(np.float32)
    item_table = np.asarray(model.encoder.item_table)
    histories = [rng.integers(2, vocab_size, size=rng.integers(1, args.max_len)) for _ in range(args.batch_size)]
    timings = []
    for name, fn in (
        (
            "blocked, seen items at -inf, two-stage top_k (the job)",
            lambda: top_n_unseen(users, item_table, histories, args.top_n),
        ),
        ("blocked, one top_k over every item (the previous form)", lambda: one_top_k(users, item_table, histories)),
        ("one user at a time (argpartition per row)", lambda: per_user_top_n(users @ item_table.T, histories, 20)),
    ):
        fn()
        tic = time.perf_counter()
        for _ in range(3):
            fn()
        seconds = (time.perf_counter() - tic) / 3
        timings.append([name, f"{seconds * 1000:.0f}", f"{args.batch_size / seconds:,.0f}"])
    print(f"\ntop-{args.top_n} of {args.items:,} items for a batch of {args.batch_size} users, one process:\n")
    print(table(["top-N", "ms per batch", "users/s"], timings))


if __name__ == "__main__":
    main()
