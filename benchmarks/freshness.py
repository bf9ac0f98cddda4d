"""What request-time encoding is worth: yesterday's recommendations against the same users
re-encoded with their events up to the request.

    python benchmarks/freshness.py --drift 0.03 0.3

On the generated clickstream (``conf/local.yaml``'s generator, with ``generator.drift_per_day``
set per run: the chance a day that a user's interest moves), the nightly of D-1 publishes its
tables and index. On day D every user active on both days is asked for recommendations just
before their last step of D ("now"), and the step they take then is the target:

- **yesterday's table**: the user's row of D-1's ``user_recommendations`` (its top 10);
- **request time**: ``Recommender.load(cfg, D-1).recommend(user, events up to now, 10)``: the same
  model and index, the user's events of D up to now added to those D-1 saw.

HR@10 and NDCG@10 over those users, with a 95 % bootstrap interval, per segment: users whose target
category is none of the top two of their history up to D-1 (drifting), the others (steady), and
users with fewer than 5 steps up to D-1 (short histories). A target the user has interacted with
before is left out (neither side may recommend it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, generated_clickstream, machine, table  # noqa: E402

sys.path.insert(0, str(ROOT))
DATE, PREV = "2026-11-26", "2026-11-25"


def ndcg(rank: int | None) -> float:
    return 0.0 if rank is None else 1.0 / np.log2(rank + 2)


def run(drift: float, work: Path) -> list[list[object]]:
    """The rows of one drift level: per segment, both sides and their paired difference."""
    import pandas as pd
    from pyspark.sql import functions as F

    from interest.etl.sessionize import kept_events
    from interest.layout import Layout
    from interest.nightly import run_nightly
    from interest.scoring.segments import estimate, format_estimate, paired_difference
    from interest.serving.recommend import Recommender

    sets = [f"paths.root={work}", f"generator.drift_per_day={drift}", "tracking.enabled=false"]
    cfg, spark = generated_clickstream(sets, f"freshness-{drift}")
    run_nightly(spark, cfg, PREV)
    events = (
        kept_events(spark, cfg, Layout.of(cfg, DATE))
        .orderBy("user_id", "ts", "ingest_order", "event_rank")
        .select("user_id", "item_id", "event_type", "ts", "category", F.to_date("ts").cast("string").alias("day"))
        .toPandas()
    )
    recs = spark.sql(
        f"SELECT user_id, recommendations FROM {cfg.embed.database}.{cfg.embed.recommendations_table} "
        f"WHERE dt = '{PREV}'"
    ).toPandas()
    spark.stop()
    yesterday = {u: [r["item_id"] for r in rs][:10] for u, rs in zip(recs.user_id, recs.recommendations)}
    recommender = Recommender.load(cfg, PREV)
    rows: dict[str, list[tuple[float, float, float, float]]] = {"all": [], "drifting": [], "steady": [], "short": []}
    for user, evs in events.groupby("user_id", sort=True):
        before, today = evs[evs.day < DATE], evs[evs.day == DATE]
        if user not in yesterday or len(today) < 2 or before.empty:
            continue
        target = today.iloc[-1]
        history = pd.concat([before, today.iloc[:-1]])
        if target.item_id in set(history.item_id):
            continue
        fresh = recommender.recommend(user, history[["item_id", "event_type", "ts"]], 10)
        old_items, new_items = yesterday[user], [i for i, _ in fresh.items]
        old = old_items.index(target.item_id) if target.item_id in old_items else None
        new = new_items.index(target.item_id) if target.item_id in new_items else None
        row = (float(old is not None), ndcg(old), float(new is not None), ndcg(new))
        top2 = set(before.category.value_counts().index[:2])
        rows["all"].append(row)
        rows["drifting" if target.category not in top2 else "steady"].append(row)
        if before.item_id.nunique() < 5:
            rows["short"].append(row)
    out = []
    for segment, values in rows.items():
        v = np.array(values).reshape(-1, 4)
        out.append(
            [
                drift,
                segment,
                len(v),
                format_estimate(estimate(v[:, 0])),
                format_estimate(estimate(v[:, 2])),
                format_estimate(paired_difference(v[:, 2], v[:, 0])),
                format_estimate(paired_difference(v[:, 3], v[:, 1])),
            ]
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drift", type=float, nargs="+", default=[0.03, 0.3])
    args = parser.parse_args()
    print(f"Machine: {machine()}\n")
    rows = []
    for drift in args.drift:
        with tempfile.TemporaryDirectory(prefix="interest-freshness-") as work:
            rows += run(drift, Path(work))
    print(
        table(
            [
                "drift/day",
                "segment",
                "n",
                "HR@10 yesterday's table",
                "HR@10 request time",
                "HR@10 gain",
                "NDCG@10 gain",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
