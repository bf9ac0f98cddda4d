"""Train an attention encoder on one date's sequences and export a versioned model.

    python jobs/train.py --conf conf/local.yaml --date 2026-11-26 --set model.encoder=memory
"""
from __future__ import annotations

from interest.cli import date_arg, job_parser, load_job_config, main_guard


def main() -> int:
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("--date", type=date_arg, required=True, help="use the sequences of this run date")
    parser.add_argument("--encoder", choices=["self_attention", "hierarchical", "memory"], default=None,
                        help="shorthand for --set model.encoder=...")
    args = parser.parse_args()
    if args.encoder:
        args.overrides.append(f"model.encoder={args.encoder}")
    cfg = load_job_config(args)

    from interest.training.run import train_and_export

    train_and_export(cfg, args.date)
    return 0


if __name__ == "__main__":
    main_guard(main)
