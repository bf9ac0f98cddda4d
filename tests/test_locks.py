"""One run per date: a second run of the same date is refused while the first holds the lock, a
lock left by a dead run is taken over, and a run date in the future is refused."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from interest.locks import RunLockedError, date_lock, lock_path
from interest.nightly import RunDateError, check_run_date, run_nightly

from conftest import DATE, ROOT, make_config


def plant_lock(root: str, date: str, **holder) -> str:
    """A lock file as a run of ``date`` would leave it."""
    path = lock_path(root, "nightly", date)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    since = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    with open(path, "w") as handle:
        json.dump({"token": "other", "host": "elsewhere", "pid": 1, "since": since, **holder}, handle)
    return path


def test_a_held_lock_refuses_a_second_run_until_released(tmp_path):
    root = str(tmp_path)
    with date_lock(root, "nightly", DATE) as path:
        assert os.path.exists(path) and json.load(open(path))["pid"] == os.getpid()
        with pytest.raises(RunLockedError, match=f"another nightly run of {DATE} is in progress .*pid {os.getpid()}"):
            with date_lock(root, "nightly", DATE):
                pass
        with date_lock(root, "nightly", "2026-11-25"):  # another date is free
            pass
    assert not os.path.exists(path)  # released
    with pytest.raises(RuntimeError, match="a stage failed"):  # released when the run fails too
        with date_lock(root, "nightly", DATE):
            raise RuntimeError("a stage failed")
    assert not os.path.exists(path)


def test_a_lock_left_by_a_dead_run_is_taken_over(tmp_path, log_lines):
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    plant_lock(str(tmp_path), DATE, host=socket.gethostname(), pid=int(dead.stdout))
    with date_lock(str(tmp_path), "nightly", DATE) as path:
        assert json.load(open(path))["pid"] == os.getpid()
    assert any("taking over the lock" in line for line in log_lines)
    plant_lock(str(tmp_path), DATE, since="2026-01-01T00:00:00+00:00")  # another host, long ago
    with date_lock(str(tmp_path), "nightly", DATE, stale_after_h=24):
        pass
    plant_lock(str(tmp_path), DATE)  # another host, just now: it may well be running
    with pytest.raises(RunLockedError, match="host elsewhere, pid 1"):
        with date_lock(str(tmp_path), "nightly", DATE):
            pass


def test_the_nightly_stops_on_the_lock_before_writing_anything(spark, tmp_path, fault_matrix):
    cfg = make_config(tmp_path)
    plant_lock(cfg.paths.root, DATE, host="scheduler-2", pid=4242)
    with pytest.raises(RunLockedError, match="host scheduler-2, pid 4242"):
        run_nightly(spark, cfg, DATE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_locks"]  # no stage started
    fault_matrix("the same date run twice at once", runs=1)


def test_a_run_date_in_the_future_is_refused():
    today = dt.date(2026, 11, 30)
    check_run_date("2026-11-30", today)
    check_run_date("2026-12-01", today)  # a day ahead: time zones east of UTC
    with pytest.raises(
        RunDateError,
        match=r"run date 2026-12-02 is in the future \(today is 2026-11-30 UTC, at most 1 day ahead is taken\)",
    ):
        check_run_date("2026-12-02", today)


@pytest.mark.slow
def test_the_job_exits_75_with_one_line_while_another_run_holds_the_date(tmp_path):
    cfg = make_config(tmp_path)
    plant_lock(cfg.paths.root, DATE, host="scheduler-2", pid=4242)
    run = subprocess.run(
        [sys.executable, "jobs/nightly.py", "--date", DATE, "--set", f"paths.root={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 75, run.stderr[-2000:]
    [line] = [ln for ln in run.stderr.splitlines() if ln.startswith("error")]
    assert line.startswith(f"error (worth a retry) [nightly dt={DATE}]: another nightly run of {DATE}")


@pytest.mark.slow
def test_the_lock_is_exclusive_on_hdfs(hdfs):
    from interest import storage

    storage.configure(hdfs.http_port)
    root = f"{hdfs.url}/locks-test"
    with date_lock(root, "nightly", DATE) as path:
        assert storage.is_file(path)
        with pytest.raises(RunLockedError, match=f"another nightly run of {DATE}"):
            with date_lock(root, "nightly", DATE):
                pass
    assert not storage.exists(path)
