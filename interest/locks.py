"""One run per date at a time, and no run of a date in the future. The lock is a file under
``paths.root`` that a second run of the same date finds and stops on, instead of racing the first
one's writes and publish.

The lock is created exclusively (``O_EXCL`` on a local disk, ``CREATE overwrite=false`` on HDFS,
both atomic), holds who took it, and is removed when the run ends, however it ends. A lock left by
a run that died (its process is gone from this host, or it is older than ``stale_after_h``) is
taken over with a line in the log. Object stores have no exclusive create: there the lock is
written, then read back to see who won, which narrows the race but cannot close it; rely on the
scheduler (one active run per DAG) as well.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import sys
import uuid
from collections.abc import Iterator

from fsspec.implementations.webhdfs import WebHDFS

from interest import storage
from interest.errors import RetryableError, UserError
from interest.layout import lock_file

log = logging.getLogger(__name__)


class RunLockedError(RetryableError, RuntimeError):
    """Another run of the same date holds the lock (worth retrying once it has finished)."""


def _owner() -> dict[str, object]:
    return {
        "token": uuid.uuid4().hex,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _create_exclusive(path: str, text: str) -> bool:
    """Create ``path`` with ``text`` unless it exists; True when this call created it."""
    fs, inner = storage.fs_path(path)
    storage.makedirs(storage.parent(path))
    if storage.is_local(path):
        try:
            fd = os.open(inner, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        return True
    if isinstance(fs, WebHDFS):
        # CREATE with overwrite=false: the datanode's create fails on an existing file, atomically
        # on the namenode. fsspec's writer always overwrites, so the two WebHDFS steps are done here.
        try:
            step = fs._call("CREATE", "PUT", inner, redirect=False, overwrite="false")
            done = fs.session.put(
                fs._apply_proxy(step.headers["Location"]),
                data=text.encode(),
                headers={"content-type": "application/octet-stream"},
            )
        except RuntimeError as exc:  # fsspec's translation of a RemoteException
            if "already exists" in str(exc).lower():
                return False
            raise
        if done.status_code == 403 and "AlreadyExists" in done.text:
            return False
        done.raise_for_status()
        return True
    if storage.exists(path):  # object stores: write, then read back who won
        return False
    storage.write_text(path, text)
    return json.loads(storage.read_text(path)).get("token") == json.loads(text)["token"]


def _is_stale(holder: dict, stale_after_h: float) -> bool:
    """The holder died: its process is gone from this host, or the lock is older than allowed."""
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder.get("pid", -1)), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            pass
    since = dt.datetime.fromisoformat(str(holder.get("since", "1970-01-01T00:00:00+00:00")))
    return dt.datetime.now(dt.timezone.utc) - since > dt.timedelta(hours=stale_after_h)


def lock_path(root: str, what: str, date: str) -> str:
    """Where the lock of ``what`` on ``date`` lives (``layout.lock_file``)."""
    return lock_file(root, what, date)


@contextlib.contextmanager
def date_lock(root: str, what: str, date: str, stale_after_h: float = 24.0) -> Iterator[str]:
    """Hold the ``what`` lock of ``date`` for the block; RunLockedError if another run holds it."""
    path = lock_path(root, what, date)
    me = _owner()
    text = json.dumps(me)
    if not _create_exclusive(path, text):
        try:
            holder = json.loads(storage.read_text(path))
        except (FileNotFoundError, ValueError):  # released meanwhile, or half-written: try once more
            holder = {}
        if holder and not _is_stale(holder, stale_after_h):
            raise RunLockedError(
                f"another {what} run of {date} is in progress (host {holder.get('host')}, pid "
                f"{holder.get('pid')}, since {holder.get('since')}); wait for it, or remove {path} if it died"
            )
        log.warning(f"taking over the lock of {date} left by a run that died: {holder or 'unreadable'}")
        storage.delete(path)
        if not _create_exclusive(path, text):
            raise RunLockedError(f"another {what} run of {date} took the lock at {path} first")
    try:
        yield path
    finally:
        failed = sys.exc_info()[1]  # the run's own error, if it is ending on one
        try:
            if json.loads(storage.read_text(path)).get("token") == me["token"]:
                storage.delete(path)
        except (FileNotFoundError, ValueError):
            pass
        except storage.StorageError as exc:
            if failed is None:
                raise
            # the storage went away under the run: its own error says so; a later run on this
            # host takes the lock over (its process is gone), elsewhere after stale_after_h
            log.warning(f"the lock {path} stays: {exc}")


class RunDateError(UserError, ValueError):
    """The run date lies in the future."""


MAX_DAYS_AHEAD = 1  # a run date may be tomorrow (UTC), for a scheduler east of UTC


def check_run_date(date: str, today: dt.date | None = None) -> None:
    """Refuse a run date beyond today (UTC) + ``MAX_DAYS_AHEAD``: a skewed clock or a typo would
    otherwise publish a partition for a day whose events have not happened yet."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    if dt.date.fromisoformat(date) > today + dt.timedelta(days=MAX_DAYS_AHEAD):
        raise RunDateError(
            f"run date {date} is in the future (today is {today.isoformat()} UTC, at most "
            f"{MAX_DAYS_AHEAD} day ahead is taken); check the clock or the --date"
        )
