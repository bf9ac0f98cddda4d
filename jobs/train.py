"""Train an attention encoder on one date's sequences and export a versioned model.

python jobs/train.py --date 2026-11-26 --encoder memory              # one process
python jobs/train.py --date 2026-11-26 --workers 2                   # 2 Spark barrier tasks
spark-submit --master spark://host:7077 jobs/train.py --conf conf/cluster.yaml --date D
"""

from __future__ import annotations

import logging

from interest.cli import date_arg, job_parser, load_job_config, main_guard
from interest.schema import ENCODER_NAMES

log = logging.getLogger("interest.jobs")


def main() -> int:
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("--date", type=date_arg, required=True, help="use the sequences of this run date")
    parser.add_argument(
        "--encoder",
        choices=ENCODER_NAMES,
        default=None,
        help="shorthand for --set model.encoder=...",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="train as N Spark barrier tasks (shorthand for --set train.workers=N)"
    )
    args = parser.parse_args()
    if args.encoder:
        args.overrides.append(f"model.encoder={args.encoder}")
    if args.workers:
        args.overrides.append(f"train.workers={args.workers}")
    cfg = load_job_config(args, "train", args.date)

    from interest.training.launch import train_model, trains_on_spark

    if not trains_on_spark(cfg):
        train_model(cfg, args.date)  # one process, no Spark needed
        return 0
    from interest.spark import get_spark

    spark = get_spark(cfg, app_name=f"interest-train-{cfg.model.encoder}-{args.date}")
    try:
        outcome = train_model(cfg, args.date, spark)
    finally:
        spark.stop()
    log.info(f"{cfg.train.workers} worker(s), {outcome.attempts} attempt(s); model: {outcome.model_dir}")
    return 0


if __name__ == "__main__":
    main_guard(main)
