"""Roll the published Delta tables back to the newest version written by another model.

    python jobs/rollback.py                                   # all three tables, undo the last model's nights
    python jobs/rollback.py --table user_recommendations      # one table
    python jobs/rollback.py --table user_interest_embeddings --version 4

After a bad night, this puts back exactly what readers saw before it (Delta RESTORE: one new
commit, so the bad version stays in the history and can itself be restored). Run it before the
next nightly: a later publish by another model is taken as good, and only an older --version
undoes it.
"""

from __future__ import annotations

import logging

from interest.cli import job_parser, load_job_config, main_guard

log = logging.getLogger("interest.jobs")


def main() -> int:
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--table",
        action="append",
        default=None,
        help="table to roll back (repeatable; default: the three embed tables)",
    )
    parser.add_argument(
        "--version",
        type=int,
        default=None,
        help="restore this version (default: the newest written by another model than the latest publish's)",
    )
    args = parser.parse_args()
    cfg = load_job_config(args, "rollback")

    from interest.serving.publish import Table
    from interest.spark import get_spark

    e = cfg.embed
    tables = args.table or [e.table, e.item_table, e.recommendations_table]
    spark = get_spark(cfg, app_name="interest-rollback")
    try:
        for table in tables:
            before, after = Table(spark, e.database, table).rollback(args.version)
            log.info(f"{e.database}.{table}: version {before} -> restored version {after}")
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    main_guard(main)
