"""The nightly refresh for one date: sessionize -> train (or reuse) -> embed -> gates -> publish.

python jobs/nightly.py --date 2026-11-26            # default date: yesterday (UTC)
python jobs/nightly.py --from 2026-11-20 --to 2026-11-26   # backfill in date order, resumable
spark-submit --master yarn --py-files dist/interest.zip jobs/nightly.py --conf conf/cluster.yaml
"""

from __future__ import annotations

import logging

from interest.cli import date_arg, job_parser, load_job_config, main_guard, yesterday

log = logging.getLogger("interest.jobs")


def main() -> int:
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("--date", type=date_arg, default=None, help="run date D (default: yesterday, UTC)")
    parser.add_argument(
        "--from",
        dest="start",
        type=date_arg,
        default=None,
        help="backfill: first date of a range run in date order (with --to); "
        "dates already done are skipped, so a stopped backfill resumes",
    )
    parser.add_argument("--to", dest="end", type=date_arg, default=None, help="backfill: last date")
    parser.add_argument("--redo", action="store_true", help="backfill: run done dates again too")
    parser.add_argument("--force-retrain", action="store_true", help="train again even if a model for this date exists")
    parser.add_argument("--show", type=int, default=3, help="print this many rows of the table")
    args = parser.parse_args()
    if (args.start is None) != (args.end is None) or (args.start and args.date):
        parser.error("a backfill needs both --from and --to, and no --date")
    date = args.end or args.date or yesterday()
    cfg = load_job_config(args, "backfill" if args.start else "nightly", None if args.start else date)

    from interest.nightly import run_backfill, run_nightly
    from interest.spark import get_spark

    spark = get_spark(cfg, app_name=f"interest-nightly-{args.start + '..' if args.start else ''}{date}")
    try:
        if args.start:
            done = run_backfill(spark, cfg, args.start, args.end, redo=args.redo)
            log.info(f"{args.start} .. {args.end}: {len(done)} date(s) run")
            return 0
        report = run_nightly(spark, cfg, date, force_retrain=args.force_retrain)
        table = f"`{cfg.embed.database}`.`{cfg.embed.table}`"
        log.info(f"table {report.table}, partition dt={date}: {report.embed.rows:,} users")
        users = report.embed.users
        commit = f" (Delta version {users.version})" if users.version is not None else ""
        log.info(f"location: {users.location}{commit}")
        if args.show:
            spark.sql(
                f"SELECT user_id, slice(embedding, 1, 4) AS embedding_head, size(interests) AS "
                f"n_interests, top_items, n_events, is_cold_start, model_version FROM {table} "
                f"WHERE dt = '{date}' ORDER BY user_id LIMIT {args.show}"
            ).show(truncate=60)
        for name, path in report.report_files.items():
            log.info(f"report {name}: {path}")
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    main_guard(main)
