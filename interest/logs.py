"""One logging setup for every job: each line says the stage, the run date and the time since the
stage began, so a nightly log read at 3 a.m. tells where the run is without counting lines.

    2026-11-30 03:12:04 INFO  train      dt=2026-11-26  +41.2s  epoch   3/20  loss 6.1132 ...

Modules log through ``logging.getLogger(__name__)`` (all under ``interest``); a job calls
:func:`setup` once and wraps each stage in :func:`stage`. Quiet by default: TensorFlow's C++ log,
absl, py4j and Spark's INFO chatter stay hidden unless ``--verbose``. With a log file, it receives
everything at DEBUG, including the full trace of an error that the terminal shows as one line;
every job run gets one under ``paths.logs`` unless ``--log-file`` names another (``cli``).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

ROOT = "interest"
FORMAT = "%(asctime)s %(levelname)-5s %(stage)-10s %(date)-13s %(elapsed)7s  %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"
NOISY = ("py4j", "absl", "tensorflow", "h5py", "matplotlib", "numexpr", "fsspec")

_stage: contextvars.ContextVar[tuple[str, str, float] | None] = contextvars.ContextVar("interest_stage", default=None)
_state: dict[str, Any] = {"verbose": False, "log_file": None}


class _StageFields(logging.Filter):
    """Adds ``stage``, ``date`` and ``elapsed`` (since the innermost :func:`stage` began) to records."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _stage.get()
        if current is None:
            record.stage, record.date, record.elapsed = "-", "", ""
        else:
            name, date, since = current
            record.stage, record.date = name, f"dt={date}" if date else ""
            record.elapsed = f"+{time.monotonic() - since:.1f}s"
        return True


def _handler(handler: logging.Handler, level: int) -> logging.Handler:
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    handler.addFilter(_StageFields())
    return handler


def setup(verbose: bool = False, log_file: str | None = None) -> None:
    """Configure the ``interest`` loggers for a job (idempotent: a second call replaces the first).

    Lines go to stdout, beside the job's results; errors stay one line on stderr (``cli``).
    """
    _state["verbose"] = verbose
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")  # before TensorFlow loads
    logger = logging.getLogger(ROOT)
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(_handler(logging.StreamHandler(sys.stdout), logging.DEBUG if verbose else logging.INFO))
    _state["log_file"] = None
    if log_file:
        attach_file(log_file)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)


def attach_file(path: str, shown_as: str | None = None) -> None:
    """Also write every line, at DEBUG, to the local file ``path``; errors name ``shown_as``
    (where the file will be copied to, e.g. on HDFS) as the place of their full trace.

    When the job's output is not a terminal (a scheduler's log) and not ``--verbose``, what native
    code writes to the process's stdout and stderr goes to the file too: the JVM's start-up lines
    (Ivy, Hadoop's warnings, Spark's own log) and TensorFlow's C++ log. The job's own lines and
    one-line errors keep their streams, so the scheduler's log reads as the job's story."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    logging.getLogger(ROOT).addHandler(_handler(logging.FileHandler(path), logging.DEBUG))
    _state["log_file"] = shown_as or path
    if not _state["verbose"] and not os.isatty(2) and not _state.get("diverted"):
        _divert_native_output(path)


def _divert_native_output(path: str) -> None:
    """Point file descriptors 1 and 2 at ``path`` (children such as the JVM inherit them), and
    Python's ``sys.stdout``/``sys.stderr`` (and the console handler) at copies of the old ones."""
    sys.stdout.flush()
    sys.stderr.flush()
    out, err = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = os.fdopen(out, "w", buffering=1)
    sys.stderr = os.fdopen(err, "w", buffering=1)
    for handler in logging.getLogger(ROOT).handlers:
        if type(handler) is logging.StreamHandler:
            handler.setStream(sys.stdout)
    _state["diverted"] = True


def flush() -> None:
    """Write out what the handlers hold (before the log file is copied elsewhere)."""
    for handler in logging.getLogger(ROOT).handlers:
        handler.flush()


def verbose() -> bool:
    """Whether the job runs with ``--verbose`` (the Spark factory then keeps Spark's INFO log)."""
    return bool(_state["verbose"])


def log_file() -> str | None:
    """The job's log file, if it has one (where one-line errors put their full trace)."""
    return _state["log_file"]


@contextlib.contextmanager
def stage(name: str, date: str | None = None) -> Iterator[None]:
    """Label every line logged inside with ``name`` and ``date``; elapsed time counts from here."""
    token = _stage.set((name, date or "", time.monotonic()))
    try:
        yield
    except BaseException as exc:
        if not hasattr(exc, "interest_stage"):  # the innermost stage names where it failed
            exc.interest_stage = (name, date or "")  # type: ignore[attr-defined]
        raise
    finally:
        _stage.reset(token)


def begin(name: str, date: str | None = None) -> None:
    """Label the rest of a job's process with ``name`` and ``date`` (a job's outermost stage)."""
    _stage.set((name, date or "", time.monotonic()))


def where(exc: BaseException | None = None) -> str:
    """``stage dt=D`` where ``exc`` was raised (or of the current stage), for one-line errors."""
    name, date = getattr(exc, "interest_stage", None) or (_stage.get() or ("", "", 0.0))[:2]
    return " ".join(p for p in (name, f"dt={date}" if date else "") if p)
