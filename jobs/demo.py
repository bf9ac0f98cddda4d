"""The README's main command: generate a sample clickstream, run the nightly refresh on it, then
ask for one user's recommendations at request time.

python jobs/demo.py                  # the embedded local default (conf/local.yaml), data under ./data
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from interest.cli import date_arg, job_parser, load_job_config, main_guard
from interest.config import absolute, load_generator_config
from interest.layout import Layout


def busiest_user(infer: str) -> str:
    """The user with the most steps among a date's inference rows."""
    import pyarrow.parquet as pq

    rows = pq.read_table(infer, columns=["user_id", "n_steps"]).to_pandas()
    return str(rows.sort_values(["n_steps", "user_id"], ascending=[False, True]).user_id.iloc[0])


def main() -> int:
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("--date", type=date_arg, default=None, help="run date (default: the generator's last day)")
    args = parser.parse_args()
    cfg = load_job_config(args, "demo", args.date)
    end_date = load_generator_config(args.conf, args.overrides).end_date
    date = args.date or end_date
    if end_date != date:
        args.overrides.append(f"generator.end_date={date}")
    here = Path(__file__).resolve().parent
    passthrough = ["--conf", args.conf, *[a for o in args.overrides for a in ("--set", o)]]
    steps = [["generate.py"], ["nightly.py", "--date", date], ["recommend.py", "--date", date, "--user", ""]]
    for step in steps:
        if step[0] == "recommend.py":  # the user with the longest history of the night
            step[-1] = busiest_user(Layout.of(cfg, date).sessionized.infer)
        print(f"\n=== {' '.join(step)} ===", flush=True)
        # each step's own lines to this job's streams (not into its log file), and its own log file
        code = subprocess.call(
            [sys.executable, str(here / step[0]), *step[1:], *passthrough], stdout=sys.stdout, stderr=sys.stderr
        )
        if code:
            return code
    root = absolute(cfg.paths.root)
    print(
        f"\nDone. Everything is under {root}:\n"
        f"  table      {cfg.embed.database}.{cfg.embed.table} (metastore {root}/metastore, "
        f"files {root}/warehouse)\n"
        f"  models     {root}/models\n"
        f"  index      {root}/models/{cfg.model.encoder}/_index/<model version>/dt={date} (nearest items)\n"
        f"  serving    {root}/models/{cfg.model.encoder}/_serving/<n> (SavedModel for TensorFlow Serving)\n"
        f"  reports    {root}/reports/nightly/dt={date}/report.md\n"
        f"  sequences  {root}/sequences/dt={date}\n"
        f'Query it: .venv/bin/python -c "from interest.config import load_config; '
        f"from interest.spark import get_spark; s = get_spark(load_config('{args.conf}')); "
        f"s.sql('SELECT * FROM {cfg.embed.database}.{cfg.embed.table}').show()\""
    )
    return 0


if __name__ == "__main__":
    main_guard(main)
