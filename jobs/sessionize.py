"""Sessionize raw click logs for one date: rejects, vocabulary, sessions, per-user sequences.

python jobs/sessionize.py --conf conf/local.yaml --date 2026-11-26
spark-submit --master spark://host:7077 jobs/sessionize.py --conf conf/cluster.yaml --date D
"""

from __future__ import annotations

from interest.cli import date_arg, job_parser, load_job_config, main_guard


def main() -> int:
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--date", type=date_arg, required=True, help="the run date D: the lookback window ends with this day"
    )
    parser.add_argument("--base-vocab", default=None, help="a previous vocabulary whose item indices must be kept")
    args = parser.parse_args()
    cfg = load_job_config(args, "sessionize", args.date)

    from interest.etl.sessionize import run_sessionize
    from interest.etl.summary import format_summary
    from interest.spark import get_spark

    spark = get_spark(cfg, app_name=f"interest-sessionize-{args.date}")
    try:
        summary = run_sessionize(spark, cfg, args.date, base_vocab=args.base_vocab)
    finally:
        spark.stop()
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    main_guard(main)
