"""Shared command-line handling for the jobs: ``--conf``, repeated ``--set key=value``, a date."""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import logging
import os
import sys
import tempfile
from collections.abc import Callable

from interest import faults, logs, storage
from interest.config import Config, ConfigError, load_config
from interest.errors import EXIT_RETRYABLE, EXIT_USER_ERROR, RetryableError, UserError
from interest.layout import partition


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
    parser.add_argument(
        "--verbose", action="store_true", help="show debug lines and the Spark, TensorFlow and py4j logs too"
    )
    parser.add_argument(
        "--log-file",
        default=None,
        metavar="PATH",
        help="write every line, and the full trace of an error, here (default: a new file under paths.logs)",
    )
    return parser


def date_arg(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def yesterday() -> str:
    return (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)).isoformat()


def load_job_config(args: argparse.Namespace, stage: str, date: str | None = None) -> Config:
    """Set up logging for the job's ``stage`` and ``date`` and load the profile; a config error
    ends the job with its message, not a traceback. The run's log file (``--log-file``, else one
    under ``paths.logs``) gets every line and the full trace of any error."""
    logs.setup(verbose=args.verbose, log_file=args.log_file)
    logs.begin(stage, date)
    try:
        cfg = load_config(args.conf, args.overrides)
    except ConfigError as exc:
        sys.exit(f"config error: {exc}")
    storage.configure_from(cfg)  # every job reaches storage, with or without a SparkSession
    if not args.log_file and cfg.paths.logs:
        _run_log(cfg, stage, date)
    faults.maybe_fail(f"{stage}_start")  # off unless a fault-matrix test asks for it
    return cfg


def _run_log(cfg: Config, stage: str, date: str | None) -> None:
    """Attach ``paths.logs/<stage>/dt=D/<UTC time>-<pid>.log``. A remote one is written locally
    and copied there when the process exits; no log file is never a reason to fail the job."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    parts = [stage, *([partition(date)] if date else []), f"{stamp}-{os.getpid()}.log"]
    target = storage.join(cfg.paths.resolve("logs"), *parts)
    try:
        if storage.is_local(target):
            logs.attach_file(storage.local_path(target))
        else:
            fd, local = tempfile.mkstemp(prefix="interest-log-", suffix=".log")
            os.close(fd)
            logs.attach_file(local, shown_as=target)
            _PENDING_LOGS.append((cfg, local, target))
            atexit.register(ship_logs)  # a job outside main_guard; main_guard ships it earlier
    except OSError as exc:
        logging.getLogger(__name__).warning(f"no run log file at {target}: {exc.strerror or exc}")
        return
    logging.getLogger(__name__).info(f"log file: {target}")


_PENDING_LOGS: list[tuple[Config, str, str]] = []  # (config, local file, remote target)


def ship_logs() -> None:
    """Copy the run's local log files to their remote places; a file stays local if that fails.

    main_guard calls it when the job body ends, while the interpreter still runs: at exit, the
    thread pools that s3fs needs are already shut down.
    """
    logs.flush()
    while _PENDING_LOGS:
        cfg, local, target = _PENDING_LOGS.pop()
        try:
            storage.configure_from(cfg)
            storage.upload(local, target)
            os.remove(local)
        except Exception as exc:  # the job's own outcome matters more than its log's copy
            print(f"warning: the run log stays at {local}; copying it to {target} failed: {exc}", file=sys.stderr)


def main_guard(body: Callable[[], int | None]) -> None:
    """Run a job body. Errors a user can act on print one line (the stage, the date, the cause)
    and exit 2; faults worth retrying exit 75 (see interest.errors). Anything else is a bug: exit
    1, with its traceback on the terminal, or one line there and the trace in ``--log-file``."""
    try:
        _guarded(body)
    finally:
        ship_logs()


def _guarded(body: Callable[[], int | None]) -> None:
    try:
        code = body()
    except RetryableError as exc:  # first: a retryable fault may also be a UserError subclass
        _one_line("error (worth a retry)", exc)
        sys.exit(EXIT_RETRYABLE)
    except UserError as exc:
        _one_line("error", exc)
        sys.exit(EXIT_USER_ERROR)
    except Exception as exc:
        unreachable = storage.unreachable_cause(exc)
        if unreachable is not None:  # storage went away under Spark or a client: not a bug
            _one_line("error (worth a retry)", exc, f"storage unreachable: {unreachable}")
            sys.exit(EXIT_RETRYABLE)
        if not logs.log_file():
            raise
        _one_line(f"bug ({type(exc).__name__}, full trace in {logs.log_file()})", exc)
        sys.exit(1)
    sys.exit(code or 0)


def first_line(exc: BaseException, limit: int = 500) -> str:
    """The cause in one line: the first line of the message (a Java error's own message rather
    than py4j's "An error occurred while calling ...", and never its trace), at most ``limit``
    characters."""
    java = getattr(exc, "java_exception", None)
    text = str(java.toString()) if java is not None else str(exc)
    line = next((part.strip() for part in text.splitlines() if part.strip()), type(exc).__name__)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _one_line(kind: str, exc: BaseException, cause: str | None = None) -> None:
    """``kind [stage dt=D]: cause`` on stderr, one line; the full trace goes to the log file."""
    where = logs.where(exc)
    line = f"{kind}{f' [{where}]' if where else ''}: {cause or first_line(exc)}"
    logging.getLogger(__name__).debug("%s", line, exc_info=exc)
    logs.flush()
    print(line, file=sys.stderr)
