"""Shared command-line handling for the jobs: ``--conf``, repeated ``--set key=value``, a date."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable

from interest.config import Config, ConfigError, load_config
from interest.errors import EXIT_RETRYABLE, EXIT_USER_ERROR, RetryableError, UserError


def job_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--conf", default="conf/local.yaml", help="YAML profile (default: conf/local.yaml, the embedded local setup)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set model.dim=64",
    )
    return parser


def date_arg(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def yesterday() -> str:
    return (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)).isoformat()


def load_job_config(args: argparse.Namespace) -> Config:
    """Load the profile; a config error ends the job with its message, not a traceback."""
    try:
        return load_config(args.conf, args.overrides)
    except ConfigError as exc:
        sys.exit(f"config error: {exc}")


def main_guard(body: Callable[[], int | None]) -> None:
    """Run a job body; errors a user can act on print one clear line and exit 2, faults worth
    retrying exit 75 (see interest.errors); anything else is a bug and keeps its traceback."""
    try:
        code = body()
    except RetryableError as exc:  # first: a retryable fault may also be a UserError subclass
        print(f"error (worth a retry): {exc}", file=sys.stderr)
        sys.exit(EXIT_RETRYABLE)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    sys.exit(code or 0)
