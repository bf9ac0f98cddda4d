"""What each training lever does to the cost of an epoch of self-attention on MovieLens 100K.

    python benchmarks/train_levers.py [--ml100k ../shared/data/ml-100k] [--rounds 2]

Sessionizes ml-100k with conf/ml100k.yaml once, then times, for each lever, the real trainer's
compiled step over whole epochs (no validation), the validation pass it runs after each epoch,
and a checkpoint save. Every measurement is a fresh process (dtype policies and XLA are process
state), and the levers are interleaved over ``--rounds`` rounds so that a noisy machine hurts
them alike; the table shows medians. Quality is not measured here: benchmarks/ml100k.py with the
same ``--set`` overrides trains to the end and reports it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, table  # noqa: E402

sys.path.insert(0, str(ROOT))
DATE = "1998-04-22"
LEVERS = {
    "baseline (float32, batch 128)": [],
    "mixed_bfloat16": ["train.precision=mixed_bfloat16"],
    "jit_compile (XLA)": ["train.jit_compile=true"],
    "batch 256, lr 2e-3": ["train.batch_size=256", "train.learning_rate=0.002"],
    "batch 64": ["train.batch_size=64"],
    "mixed_bfloat16, batch 64": ["train.precision=mixed_bfloat16", "train.batch_size=64"],
}


def child(root: str, overrides: list[str], epochs: int) -> None:
    """One lever in this process: print a JSON line of its timings."""
    import contextlib

    import tensorflow as tf

    from interest.config import load_config
    from interest.data.files import training_data
    from interest.layout import Layout
    from interest.training.loop import Trainer

    cfg = load_config(ROOT / "conf" / "ml100k.yaml", [f"paths.root={root}", f"train.epochs={epochs}", *overrides])
    data = training_data(cfg, Layout.of(cfg, DATE))
    trainer = Trainer(cfg, data)
    seconds = []
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as ckpt:
        iterator = iter(trainer._dataset(stack))
        for epoch in range(epochs):
            tic = time.perf_counter()
            for step in range(trainer.steps_per_epoch):
                loss, _ = trainer._train_step(iterator, tf.constant(epoch * trainer.steps_per_epoch + step, tf.int64))
            float(loss)  # wait for the last step
            seconds.append(time.perf_counter() - tic)
        valid = []
        for _ in range(3):
            tic = time.perf_counter()
            trainer._validate()
            valid.append(time.perf_counter() - tic)
        manager, _ = trainer._checkpoints(ckpt)
        saves = []
        for i in range(3):
            tic = time.perf_counter()
            manager.save(checkpoint_number=i)
            saves.append(time.perf_counter() - tic)
    print(
        "LEVER "
        + json.dumps(
            {
                "epoch_s": statistics.median(seconds[1:]),  # the first epoch traces the step
                "first_epoch_s": seconds[0],
                "valid_s": statistics.median(valid[1:]),
                "save_s": statistics.median(saves[1:]),
                "steps": trainer.steps_per_epoch,
                "rows": data.train_rows,
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ml100k", default=os.environ.get("ML100K_DIR", str(ROOT.parent / "shared" / "data" / "ml-100k"))
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per lever and round")
    parser.add_argument("--work", default=None)
    parser.add_argument("--child", nargs="*", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="interest-levers-"))
    if args.child is not None:
        child(str(work), args.child, args.epochs)
        return
    udata = Path(args.ml100k) / "u.data"
    if not udata.is_file():
        sys.exit(f"MovieLens 100K not found at {udata} (pass --ml100k or set ML100K_DIR)")
    from interest.config import load_config
    from interest.etl.sessionize import run_sessionize
    from interest.spark import get_spark

    cfg = load_config(ROOT / "conf" / "ml100k.yaml", [f"paths.root={work}", f"ingest.path={udata}"])
    spark = get_spark(cfg, "interest-levers")
    run_sessionize(spark, cfg, DATE)
    spark.stop()
    found: dict[str, list[dict]] = {name: [] for name in LEVERS}
    for r in range(args.rounds):
        for name, overrides in LEVERS.items():
            cmd = [sys.executable, __file__, "--work", str(work), "--epochs", str(args.epochs), "--child", *overrides]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
            line = next((x for x in out.stdout.splitlines() if x.startswith("LEVER ")), None)
            if line is None:
                sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
            found[name].append(json.loads(line[6:]))
            print(f"round {r + 1}: {name}: {found[name][-1]}", flush=True)
    base = statistics.median(x["epoch_s"] for x in found["baseline (float32, batch 128)"])
    rows = []
    for name, runs in found.items():
        epoch = statistics.median(x["epoch_s"] for x in runs)
        valid = statistics.median(x["valid_s"] for x in runs)
        save = statistics.median(x["save_s"] for x in runs)
        rows.append(
            [
                name,
                runs[0]["steps"],
                f"{epoch:.2f}",
                f"{base / epoch:.2f}x",
                f"{runs[0]['rows'] / epoch:,.0f}",
                f"{statistics.median(x['first_epoch_s'] for x in runs):.1f}",
                f"{valid:.2f}",
                f"{save:.2f}",
            ]
        )
    print(
        f"\nmachine: {machine()}; MovieLens 100K, {found[next(iter(found))][0]['rows']:,} training sequences, "
        f"maxlen 200, d=50, 2 blocks; medians of {args.rounds} rounds x {args.epochs - 1} epochs\n"
    )
    print(table(HEAD, rows))


HEAD = ["lever", "steps/epoch", "train s/epoch", "speed-up", "seq/s", "first epoch s", "validation s", "checkpoint s"]

if __name__ == "__main__":
    main()
