"""Evaluate exported encoders beside popularity and item co-occurrence: per segment, with intervals.

python jobs/evaluate.py --date 2026-11-26                       # each encoder's model as of the date
python jobs/evaluate.py --date 2026-11-26 --models data/models/memory/<version>
python jobs/evaluate.py --date 2026-11-19 --after 2026-11-26    # also a temporal split at the date
"""

from __future__ import annotations

import logging

from interest.cli import date_arg, job_parser, load_job_config, main_guard
from interest.schema import ENCODER_NAMES

ALL = list(ENCODER_NAMES)


log = logging.getLogger("interest.jobs")


def main() -> int:
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("--date", type=date_arg, required=True, help="evaluate on this date's test targets")
    parser.add_argument(
        "--encoders",
        nargs="+",
        choices=ALL,
        default=None,
        help="the model of these encoders as of --date (default: all that exist)",
    )
    parser.add_argument("--models", nargs="+", default=None, help="explicit model folders")
    parser.add_argument(
        "--after",
        type=date_arg,
        default=None,
        help="a later date whose sequences (sessionized with --base-vocab of --date's vocabulary) hold "
        "what users did next: adds the temporal split and new items",
    )
    args = parser.parse_args()
    cfg = load_job_config(args, "evaluate", args.date)

    from interest.evaluation.evaluate import evaluate_models, models_as_of
    from interest.evaluation.report import markdown_table
    from interest.layout import Layout
    from interest.models.export import ModelNotFoundError

    if args.models:
        dirs = args.models
    else:
        wanted = args.encoders or ALL
        dirs = []
        for name in wanted:
            try:
                dirs += models_as_of(cfg, args.date, [name])
            except ModelNotFoundError:
                if args.encoders:
                    raise
        if not dirs:
            models = Layout.of(cfg, args.date).paths.models
            raise ModelNotFoundError(f"no exported models under {models}: run jobs/train.py first")
    out = evaluate_models(cfg, args.date, dirs, after=args.after)
    print(markdown_table(out["results"], cfg.eval.k, cfg.eval.sampled_negatives))
    for name, path in out["paths"].items():
        log.info(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    main_guard(main)
