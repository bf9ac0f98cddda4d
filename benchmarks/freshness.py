"""What request-time encoding is worth: yesterday's recommendations against the same users
re-encoded with their events up to the request.

    python benchmarks/freshness.py [--drift 0.03 0.3] [--ml100k DIR] [--cut 1997-12-31] [--figure F]

A request on day D is a user's last step of D ("the target", which they have not interacted
with before); the user has at least one other step on D. Two answers, each the top 10 new items:

- **yesterday's table**: what the night of D-1 published for the user (events up to D-1);
- **request time**: ``Recommender.recommend(user, events up to the target, 10)``: the same
  model and index, the user's steps of D before the target added.

Two sources:

- the generated clickstream (``conf/local.yaml``'s generator, ``generator.drift_per_day`` per run:
  the chance a day that a user's interest moves): the nightly of D-1 runs and its published
  ``user_recommendations`` row is yesterday's answer; requests are on the next day;
- MovieLens 100K (``--ml100k``; ``conf/ml100k.yaml``, genres as categories), a temporal replay:
  the nightly of ``--cut`` T trains and indexes; every day D after T to the end of the log is a
  request day. Yesterday's answer is the row a nightly of D-1 would publish with that model (the
  request path on the events up to D-1, which gives the night's row exactly:
  ``tests/nightly/test_embed_stage.py``), so both answers use T's model and index: a model
  retrained weekly, say, with embeddings refreshed every night.

HR@10 and NDCG@10 with a 95 % bootstrap interval, per segment: drifting (the target's category is
in none of the top two of the history before D), steady, short histories (fewer than 5 items before
D), and by the steps of D before the target (what the table did not see); intervals resample
requests. ``--figure`` draws the HR@10 gain per segment with its interval (green where it excludes
0 on at least 20 requests).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, generated_clickstream, machine, table  # noqa: E402

sys.path.insert(0, str(ROOT))
DATE, PREV = "2026-11-26", "2026-11-25"
ML100K_END = "1998-04-22"  # the last day of the log
NEW_STEP_BINS = ((1, 1), (2, 4), (5, 19), (20, None))  # steps of the request day before the target
MIN_FIGURE_REQUESTS = 20  # fewer: grey in the figure whatever the interval says

Answer = Callable[[str, "object"], list[str]]  # (user, events) -> the top 10 item ids


def ndcg(rank: int | None) -> float:
    return 0.0 if rank is None else 1.0 / np.log2(rank + 2)


def top_two(categories) -> set[str]:
    """The two categories most frequent in a history (an item in several, "A|B", counts in each)."""
    counts = Counter(c for value in categories.dropna() for c in str(value).split("|") if c)
    return {c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:2]}


def new_steps_label(n: int) -> str:
    """ "1 new step", "2-4 new steps", ..., "20+ new steps": the steps of D before the target."""
    low, high = next((lo, hi) for lo, hi in NEW_STEP_BINS if n >= lo and (hi is None or n <= hi))
    if low == high:
        return f"{low} new step" + ("s" if low != 1 else "")
    return f"{low}-{high} new steps" if high is not None else f"{low}+ new steps"


def score(events, days: list[str], yesterday: Answer, fresh: Answer) -> dict[str, list[tuple[float, ...]]]:
    """Per segment, per request: (hit, NDCG) of yesterday's answer, then of the request-time one.

    events: the kept events (``user_id, item_id, event_type, ts, category, day``) in the nightly's
    order; days: the request days."""
    import pandas as pd

    rows: dict[str, list[tuple[float, ...]]] = {"all": [], "drifting": [], "steady": [], "short": []}
    rows.update({new_steps_label(lo): [] for lo, _ in NEW_STEP_BINS})
    for day in days:
        for user in sorted(events.user_id[events.day == day].unique()):
            evs = events[events.user_id == user]
            before, today = evs[evs.day < day], evs[evs.day == day]
            if len(today) < 2 or before.empty:
                continue
            target = today.iloc[-1]
            history = pd.concat([before, today.iloc[:-1]])
            if target.item_id in set(history.item_id):
                continue
            old_items = yesterday(user, before)
            new_items = fresh(user, history)
            if old_items is None:  # the night did not publish the user
                continue
            old = old_items.index(target.item_id) if target.item_id in old_items else None
            new = new_items.index(target.item_id) if target.item_id in new_items else None
            row = (float(old is not None), ndcg(old), float(new is not None), ndcg(new))
            rows["all"].append(row)
            wanted = set(str(target.category).split("|")) if isinstance(target.category, str) else set()
            rows["drifting" if not wanted & top_two(before.category) else "steady"].append(row)
            if before.item_id.nunique() < 5:
                rows["short"].append(row)
            rows[new_steps_label(len(today) - 1)].append(row)
    return rows


def summarise(source: str, rows: dict[str, list[tuple[float, ...]]]) -> list[list[object]]:
    """Table rows: per segment, HR@10 of both answers and the paired gains (interval over requests)."""
    from interest.scoring.segments import estimate, format_estimate, paired_difference

    out = []
    for segment, values in rows.items():
        v = np.array(values).reshape(-1, 4)
        gain = paired_difference(v[:, 2], v[:, 0])
        out.append(
            [
                source,
                segment,
                len(v),
                format_estimate(estimate(v[:, 0])),
                format_estimate(estimate(v[:, 2])),
                format_estimate(gain),
                format_estimate(paired_difference(v[:, 3], v[:, 1])),
                gain,
            ]
        )
    return out


def kept(spark, cfg, date: str):
    """The events as the nightly of ``date`` keeps them, in its order, with their day."""
    from pyspark.sql import functions as F

    from interest.etl.sessionize import kept_events
    from interest.layout import Layout

    return (
        kept_events(spark, cfg, Layout.of(cfg, date))
        .orderBy("user_id", "ts", "ingest_order", "event_rank")
        .select("user_id", "item_id", "event_type", "ts", "category", F.to_date("ts").cast("string").alias("day"))
        .toPandas()
    )


def items_of(recommender, k: int = 10) -> Answer:
    return lambda user, evs: [i for i, _ in recommender.recommend(user, evs[["item_id", "event_type", "ts"]], k).items]


def generated(drift: float, work: Path) -> list[list[object]]:
    """The generated clickstream at one drift level: the nightly of D-1's table against request time."""
    from interest.nightly import run_nightly
    from interest.serving.recommend import Recommender

    sets = [f"paths.root={work}", f"generator.drift_per_day={drift}", "tracking.enabled=false"]
    cfg, spark = generated_clickstream(sets, f"freshness-{drift}")
    run_nightly(spark, cfg, PREV)
    events = kept(spark, cfg, DATE)
    recs = spark.sql(
        f"SELECT user_id, recommendations FROM {cfg.embed.database}.{cfg.embed.recommendations_table} "
        f"WHERE dt = '{PREV}'"
    ).toPandas()
    spark.stop()
    table_rows = {u: [r["item_id"] for r in rs][:10] for u, rs in zip(recs.user_id, recs.recommendations)}
    fresh = items_of(Recommender.load(cfg, PREV))
    return summarise(f"generated, drift {drift}/day", score(events, [DATE], lambda u, _: table_rows.get(u), fresh))


def movielens(data_dir: Path, cut: str, work: Path, overrides: list[str]) -> list[list[object]]:
    """MovieLens 100K replayed after ``cut``: the model and index of the night of ``cut``, every
    later day a request day."""
    from interest.config import load_config
    from interest.nightly import run_nightly
    from interest.serving.recommend import Recommender
    from interest.spark import get_spark

    sets = [
        f"paths.root={work}",
        f"ingest.path={data_dir / 'u.data'}",
        f"ingest.item_categories={data_dir / 'u.item'}",
        "tracking.enabled=false",
        *overrides,
    ]
    cfg = load_config(ROOT / "conf" / "ml100k.yaml", sets)
    spark = get_spark(cfg, "freshness-ml100k")
    report = run_nightly(spark, cfg, cut)
    print(f"night of {cut}: model {report.model.version}, {report.embed.rows:,} users published", flush=True)
    events = kept(spark, cfg, ML100K_END)
    spark.stop()
    answer = items_of(Recommender.load(cfg, cut))
    days = sorted(d for d in events.day.unique() if d > cut)
    return summarise(f"MovieLens 100K after {cut}", score(events, days, answer, answer))


def figure(rows: list[list[object]], path: Path) -> None:
    """HR@10 gain of request time over yesterday's table, per source and segment, with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = list(dict.fromkeys(r[0] for r in rows))
    fig, axes = plt.subplots(1, len(sources), figsize=(4.2 * len(sources), 3.6), sharex=True, squeeze=False)
    for ax, source in zip(axes[0], sources):
        mine = [r for r in rows if r[0] == source and r[2]][::-1]
        gains = [r[-1] for r in mine]
        y = np.arange(len(mine))
        mean = np.array([g["mean"] for g in gains])
        err = np.array([[g["mean"] - g["lo"], g["hi"] - g["mean"]] for g in gains]).T
        # green: a gain outside its interval's 0, on at least MIN_FIGURE_REQUESTS requests
        colours = [
            "tab:gray"
            if r[2] < MIN_FIGURE_REQUESTS
            else "tab:green"
            if g["lo"] > 0
            else "tab:red"
            if g["hi"] < 0
            else "tab:gray"
            for r, g in zip(mine, gains)
        ]
        ax.barh(y, mean, xerr=err, color=colours, capsize=3)
        ax.set_yticks(y, [f"{r[1]} (n={r[2]})" for r in mine], fontsize=8)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(source, fontsize=9)
        ax.set_xlabel("HR@10 gain of request-time encoding")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drift", type=float, nargs="*", default=[0.03, 0.3])
    parser.add_argument("--ml100k", default=None, help="MovieLens 100K's folder (default: $ML100K_DIR if set)")
    parser.add_argument("--cut", default="1997-12-31")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="MovieLens config overrides")
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args()
    print(f"Machine: {machine()}\n", flush=True)
    rows = []
    for drift in args.drift:
        with tempfile.TemporaryDirectory(prefix="interest-freshness-") as work:
            rows += generated(drift, Path(work))
    data_dir = args.ml100k or os.environ.get("ML100K_DIR")
    if data_dir:
        if not (Path(data_dir) / "u.data").is_file():
            sys.exit(f"MovieLens 100K not found at {data_dir}")
        with tempfile.TemporaryDirectory(prefix="interest-freshness-ml100k-") as work:
            rows += movielens(Path(data_dir), args.cut, Path(work), args.overrides)
    print(
        table(
            [
                "source",
                "segment",
                "requests",
                "HR@10 yesterday's table",
                "HR@10 request time",
                "HR@10 gain",
                "NDCG@10 gain",
            ],
            [r[:-1] for r in rows],
        )
    )
    if args.figure:
        figure(rows, args.figure)


if __name__ == "__main__":
    main()
