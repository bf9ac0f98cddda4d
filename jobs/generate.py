"""Generate a synthetic clickstream (planted interests, drift, sessions, funnel, bots, bad rows).

python jobs/generate.py --conf conf/local.yaml --events 1000000
"""

from __future__ import annotations

import logging
import time

from interest.cli import job_parser, load_job_config, main_guard
from interest.config import load_generator_config
from interest.synth import generate, sized_for_events

log = logging.getLogger("interest.jobs")


def main() -> int:
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--events", type=int, default=None, help="about this many events (sets generator.users); default: from config"
    )
    args = parser.parse_args()
    cfg = load_job_config(args, "generate")  # checks the generator section too
    gen = load_generator_config(args.conf, args.overrides)
    gen = sized_for_events(gen, args.events) if args.events else gen
    started = time.perf_counter()
    out, truth = cfg.paths.raw_events, cfg.paths.truth
    summary = generate(gen, out, truth)
    wall = time.perf_counter() - started
    log.info(
        f"{summary.events:,} events, {gen.users:,} users ({summary.bots} bots), "
        f"{gen.items:,} items, {summary.days} days in {wall:.1f} s "
        f"({summary.events / max(wall, 1e-9):,.0f} events/s)"
    )
    log.info(f"planted dirt: {summary.counts}")
    log.info(f"events: {out}")
    log.info(f"truth:  {truth}")
    return 0


if __name__ == "__main__":
    main_guard(main)
