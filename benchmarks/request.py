"""Per-request latency: a user's recent events to their interests and top new items.

    python benchmarks/request.py [--events 10 100 1000 10000] [--requests 300] [--set model.encoder=memory]

The nightly of one date runs on the generated clickstream (``conf/local.yaml``), then the same
users' most recent ``--events`` raw events (a user's log repeated a day apart where it is
shorter) are answered, one request at a time and in batches of 100, by:

- the exported SavedModel (``<models>/<encoder>/_serving/<n>``, loaded with TensorFlow alone: what
  TensorFlow Serving runs, without its RPC), its ``serving_default`` signature;
- ``interest.serving.recommend.Recommender.recommend`` (the Python path of ``jobs/recommend.py``:
  the nightly's step builder and batch function, the index for the top 10), one user per call.

p50 and p99 milliseconds over ``--requests`` requests (batches: over ``--requests / 10``), after
a warm-up, with the threads TensorFlow picks (the machine's cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, PeakRSS, generated_clickstream, machine, table  # noqa: E402

sys.path.insert(0, str(ROOT))
DATE = "2026-11-26"


def percentiles(times: list[float]) -> str:
    return f"{np.percentile(times, 50):.1f} / {np.percentile(times, 99):.1f}"


def requests(events, users: list[str], n: int) -> list[tuple[str, object]]:
    """Per user, their latest ``n`` raw events (item_id, event_type, ts: the log's text) in arrival
    order. A user with fewer events has their log repeated, each copy a day after the last, to
    reach ``n``: a longer history of the same habits."""
    import pandas as pd

    out = []
    for u in users:
        own = events[events.user_id == u][["item_id", "event_type", "ts"]]
        times = pd.to_datetime(own.ts, utc=True, format="mixed")
        span = times.max() - times.min() + pd.Timedelta(days=1)
        copies = -(-n // len(own))
        parts = [
            own.assign(ts=(times + span * (c - copies + 1)).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")) for c in range(copies)
        ]
        out.append((u, pd.concat(parts).tail(n)))
    return out


def batch(reqs: list[tuple[str, object]]) -> dict[str, object]:
    """The signature's inputs for several users: [B, E] strings each, as the log has them, ""
    padding the shorter ones."""
    import tensorflow as tf

    width = max(len(e) for _, e in reqs)
    ids = np.full((len(reqs), width), "", dtype=object)
    types = np.full((len(reqs), width), "", dtype=object)
    ts = np.full((len(reqs), width), "", dtype=object)
    for row, (_, e) in enumerate(reqs):
        ids[row, : len(e)] = e.item_id.astype(str).to_numpy()
        types[row, : len(e)] = e.event_type.astype(str).to_numpy()
        ts[row, : len(e)] = e.ts.to_numpy()  # already the log's text (main reads it so)
    return {
        "item_id": tf.constant(ids.astype(str)),
        "event_type": tf.constant(types.astype(str)),
        "ts": tf.constant(ts.astype(str)),
    }


def timed(fn, inputs: list, repeats: int) -> list[float]:
    """Milliseconds of ``fn(x)`` over ``repeats`` calls, cycling through ``inputs``, after one warm-up
    call (the first traces)."""
    fn(inputs[0])
    out = []
    for r in range(repeats):
        x = inputs[r % len(inputs)]
        tic = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - tic) * 1e3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, nargs="+", default=[10, 100, 1000, 10000])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="e.g. model.encoder=memory")
    args = parser.parse_args()
    print(f"Machine: {machine()}\n", flush=True)

    import pandas as pd
    import tensorflow as tf

    from interest.nightly import run_nightly
    from interest.serving.recommend import Recommender

    with tempfile.TemporaryDirectory(prefix="interest-request-") as work:
        cfg, spark = generated_clickstream(
            [f"paths.root={work}", "tracking.enabled=false", *args.overrides], "request-latency"
        )
        report = run_nightly(spark, cfg, DATE)
        spark.stop()
        raw = pd.read_parquet(cfg.paths.raw_events, columns=["user_id", "item_id", "event_type", "ts"])
        raw = raw[raw.event_type.isin(cfg.sessionize.event_types)].copy()
        ts = pd.to_datetime(raw.ts, utc=True, format="mixed", errors="coerce")
        # the events the night kept: the generator also plants rows decades off, which a request never carries
        end = pd.Timestamp(DATE, tz="UTC") + pd.Timedelta(days=1)
        kept = ts.notna() & (ts >= end - pd.Timedelta(days=cfg.sessionize.lookback_days or 36500)) & (ts < end)
        raw = raw.assign(ts=raw.ts.astype(str))[kept]
        users = raw.user_id.value_counts()
        users = sorted(users[users >= 20].index)[: args.requests]
        signature = tf.saved_model.load(report.embed.saved_model).signatures["serving_default"]
        recommender = Recommender.load(cfg, DATE)
        rows = []
        for n in args.events:
            reqs = requests(raw, users, n)
            one = [batch([r]) for r in reqs]
            hundred = [batch(reqs[i : i + 100]) for i in range(0, len(reqs) - 99, 100)] or [batch(reqs)]
            with PeakRSS(os.getpid(), 0.05) as peak:
                saved_one = timed(lambda x: signature(**x), one, len(reqs))
                saved_100 = timed(lambda x: signature(**x), hundred, max(len(reqs) // 10, 5))
            python_one = timed(lambda x: recommender.recommend(x[0], x[1], 10), reqs, len(reqs))
            rows.append(
                [
                    n,
                    len(users),
                    report.embed.index_kind,
                    percentiles(saved_one),
                    percentiles(saved_100),
                    percentiles(python_one),
                    f"{peak.peak / 2**20:,.0f}",
                ]
            )
            print(f"{n} events done", flush=True)
    print(
        f"\n{len(users)} users (at least 20 events each, repeated a day apart to reach the longer requests); "
        f"model {report.model.version} "
        f"({cfg.model.encoder}, max_len {cfg.sessionize.max_len}), {report.embed.rows:,} users published\n"
    )
    print(
        table(
            [
                "events per user",
                "users",
                "index",
                "SavedModel, 1 user: p50 / p99 ms",
                "SavedModel, 100 users: p50 / p99 ms",
                "Recommender.recommend, 1 user: p50 / p99 ms",
                "peak RSS MiB (SavedModel runs so far)",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
