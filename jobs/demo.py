"""The README's main command: generate a sample clickstream, then run the pipeline for one date.

    python jobs/demo.py --date 2026-11-26
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from interest.config import absolute
from interest.cli import date_arg, job_parser, load_job_config, main_guard


def main() -> int:
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("--date", type=date_arg, default=None,
                        help="run date (default: the generator's last day)")
    args = parser.parse_args()
    cfg = load_job_config(args)
    date = args.date or cfg.generator.end_date
    if cfg.generator.end_date != date:
        args.overrides.append(f"generator.end_date={date}")
    here = Path(__file__).resolve().parent
    passthrough = ["--conf", args.conf, *[a for o in args.overrides for a in ("--set", o)]]
    for step in (["generate.py"], ["sessionize.py", "--date", date]):
        print(f"\n=== {step[0]} ===", flush=True)
        code = subprocess.call([sys.executable, str(here / step[0]), *step[1:], *passthrough])
        if code:
            return code
    print(f"\nResults for {date} are under {absolute(cfg.paths.root)}")
    return 0


if __name__ == "__main__":
    main_guard(main)
