"""Recommend for one user now: their events encoded by the model and index of a date.

python jobs/recommend.py --date 2026-11-26 --user u000042                    # its events up to the date
python jobs/recommend.py --date 2026-11-26 --user u000042 --events today.csv  # and today's: item_id, event_type, ts
"""

from __future__ import annotations

import logging

from interest.cli import date_arg, job_parser, load_job_config, main_guard

log = logging.getLogger("interest.jobs")


def read_events(path: str):
    """A file of request-time events (CSV, JSON lines or Parquet): item_id, event_type, ts."""
    import pandas as pd

    from interest import storage
    from interest.serving.recommend import RecommendInputError

    if not storage.exists(path):
        raise RecommendInputError(f"no events file at {path}")
    if path.endswith(".parquet"):
        return pd.read_parquet(path)
    if path.endswith((".json", ".jsonl")):
        return pd.read_json(path, lines=True, dtype={"item_id": str})
    return pd.read_csv(path, dtype={"item_id": str})


def main() -> int:
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("--date", type=date_arg, required=True, help="the night whose model and index answer")
    parser.add_argument("--user", required=True)
    parser.add_argument("--events", default=None, help="events after the date's log: CSV, JSON lines or Parquet")
    parser.add_argument("-k", type=int, default=10, help="items to recommend")
    args = parser.parse_args()
    cfg = load_job_config(args, "recommend", args.date)

    import pandas as pd
    from pyspark.sql import functions as F

    from interest.etl.sessionize import kept_events
    from interest.layout import Layout
    from interest.serving.recommend import Recommender
    from interest.spark import get_spark

    recommender = Recommender.load(cfg, args.date)  # a missing model, index or vocabulary: one line
    spark = get_spark(cfg, app_name=f"interest-recommend-{args.date}")
    try:
        history = (
            kept_events(spark, cfg, Layout.of(cfg, args.date))
            .where(F.col("user_id") == args.user)
            .orderBy("ts", "ingest_order", "event_rank")
            .select("item_id", "event_type", "ts")
            .toPandas()
        )
    finally:
        spark.stop()
    extra = read_events(args.events) if args.events else history.iloc[:0]
    if history.empty and extra.empty:
        log.info(f"user {args.user} has no events up to {args.date}: the popular items (cold start)")
    events = pd.concat([history, extra[["item_id", "event_type", "ts"]]], ignore_index=True)
    rec = recommender.recommend(args.user, events, args.k)
    log.info(
        f"user {rec.user_id}: {len(history)} event(s) in the log, {len(extra)} more given; {rec.steps} step(s)"
        f"{', cold start' if rec.is_cold_start else ''}; model {rec.model_version}"
        + (f"; {len(rec.unknown_items)} item(s) the model does not know" if rec.unknown_items else "")
        + (f"; left out as the nightly would: {rec.rejected}" if rec.rejected else "")
    )
    print("recommended (item, score):")
    for item, score in rec.items:
        print(f"  {item}  {score:.4f}")
    print("because of (history item, attention):")
    for item, weight in rec.explanation:
        print(f"  {item}  {weight:.3f}")
    return 0


if __name__ == "__main__":
    main_guard(main)
