"""Faults on purpose, for the fault-matrix tests: off unless ``INTEREST_FAULTS`` is set.

``INTEREST_FAULTS=[action@]point:marker[,...]`` makes the first process that reaches ``point``
create ``marker`` and fail there. Every later arrival finds the marker and goes on, so a retried
task or a resumed run succeeds: the test then checks that the retry gave what a clean run gives.

Actions:

- ``die`` (the default): exit at once with 137, no cleanup, as a process killed by the kernel;
- ``hang``: stop making progress forever, as a deadlocked step (the step watchdog must end it);
- ``pause``: wait until a file ``<marker>.go`` appears, then go on, so that a test can change the
  world at this point (stop a storage server) and watch the job meet it;
- ``kill_executor``: SIGKILL the Spark executor JVM that runs this Python worker, as a lost
  executor (a cluster node gone); refuses anything that is not an executor;
- ``raise``: raise an exception nobody foresaw, as a bug does.

Points: ``embed_batch`` (a Spark Python worker, inside batch inference), ``train_step_<N>`` (a
training process, before step N; the distributed launcher hands the driver's ``INTEREST_FAULTS``
to its training workers with their job), ``<stage>_start`` (a job, once its config and log are set) and,
for each published table, ``publish_<table>_start`` (before staging), ``_staged`` (staged and
gated), ``_commit`` (just before the Delta commit or the partition swap) and ``_committed`` (just
after it, before the cleanup and the metastore refresh).
"""

from __future__ import annotations

import os
import signal
import time

ACTIONS = ("die", "hang", "kill_executor", "pause", "raise")


def _parse(spec: str) -> list[tuple[str, str, str]]:
    """``(action, point, marker)`` for each item of an ``INTEREST_FAULTS`` value."""
    out = []
    for item in filter(None, spec.split(",")):
        head, _, marker = item.partition(":")
        action, _, point = head.rpartition("@")
        action = action or "die"
        if action not in ACTIONS or not point or not marker:
            raise ValueError(f"INTEREST_FAULTS item {item!r} is not [{'|'.join(ACTIONS)}@]point:marker")
        out.append((action, point, marker))
    return out


def _executor_jvm() -> int:
    """The pid of the executor JVM above this Python worker (worker → pyspark daemon → JVM)."""
    pid = os.getpid()
    for _ in range(3):
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])  # field 4: the parent's pid
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"CoarseGrainedExecutorBackend" in f.read():
                return pid
    raise RuntimeError("kill_executor: this Python worker does not run under a Spark executor JVM")


def maybe_fail(point: str) -> None:
    """Fail here once, the way ``INTEREST_FAULTS`` asks for it at ``point`` (if it does)."""
    spec = os.environ.get("INTEREST_FAULTS")
    if not spec:
        return
    for action, name, marker in _parse(spec):
        if name != point:
            continue
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue  # failed here once already: this is the retry
        if action == "hang":
            while True:
                time.sleep(3600)
        if action == "pause":
            while not os.path.exists(f"{marker}.go"):
                time.sleep(0.1)
            continue
        if action == "raise":
            raise RuntimeError(f"injected fault at {point}")
        if action == "kill_executor":
            os.kill(_executor_jvm(), signal.SIGKILL)
        os._exit(137)
