"""Embed every active user of a date with an exported model and publish the tables.

python jobs/embed.py --date 2026-11-26                       # the encoder's latest model
python jobs/embed.py --date 2026-11-26 --model data/models/memory/<version>
"""

from __future__ import annotations

import json
import logging

from interest.cli import date_arg, job_parser, load_job_config, main_guard

log = logging.getLogger("interest.jobs")


def main() -> int:
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("--date", type=date_arg, required=True)
    parser.add_argument(
        "--model",
        default=None,
        help="model folder (default: model.encoder's model for --date: the one "
        "trained on that date's data, else the newest trained before it)",
    )
    args = parser.parse_args()
    cfg = load_job_config(args, "embed", args.date)

    from interest.layout import Layout
    from interest.models.export import model_as_of
    from interest.serving.embed import run_embed
    from interest.spark import get_spark

    model_dir = args.model or model_as_of(Layout.of(cfg, args.date).paths.models, cfg.model.encoder, args.date)
    spark = get_spark(cfg, app_name=f"interest-embed-{args.date}")
    try:
        report = run_embed(spark, cfg, args.date, model_dir)
    finally:
        spark.stop()
    gates = {k: g.ok for k, g in report.users.gates.items()}
    log.info(
        f"{report.rows:,} users ({report.cold_start:,} cold start) published to "
        f"{cfg.embed.database}.{cfg.embed.table} dt={args.date} with model {report.model_version}"
    )
    log.info(f"gates: {json.dumps(gates)}; item index ({report.index_kind}) at {report.index}; {report.seconds} s")
    return 0


if __name__ == "__main__":
    main_guard(main)
