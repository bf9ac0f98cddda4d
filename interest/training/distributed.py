"""Distributed training as a Spark barrier stage: N tasks working as one TensorFlow job.

Each barrier task reserves a port, learns its peers' addresses with ``allGather``, builds
``TF_CONFIG`` and starts the training loop in a child process
(``python -m interest.training.worker``) under MultiWorkerMirroredStrategy. A child process,
because a TensorFlow server cannot be shut down inside a process: a retried stage must start
clean. The child dies with its task (PR_SET_PDEATHSIG), so a killed stage leaves nothing behind.

Ports: TensorFlow's gRPC server turns SO_REUSEPORT off, so a port cannot be held open while TF
binds it. Instead the task reserves a port below the kernel's ephemeral range (so the kernel never
hands it to an outgoing connection), keeps it bound while the peers exchange addresses, passes the
socket to the child, and the child closes it just before TensorFlow binds. Only a program binding
that exact port in that instant could clash; then the worker fails with "port clash" and the
driver runs the stage again with new ports.

Faults: the chief checkpoints to a shared path every K steps. When a task fails, the driver runs
the stage again (up to ``train.max_failures`` times) and every worker resumes from the chief's
last checkpoint. Before launching, the driver checks the slots, the sequences and the checkpoint
path, so these fail in seconds with a clear message instead of a hung barrier stage.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from interest import logs
from interest.config import Config
from interest.data.files import check_training_inputs
from interest.errors import EXIT_RETRYABLE, UserError
from interest.layout import Layout
from interest.spark import JobLabels
from interest.training.run import TrainOutcome, checkpoint_dir

log = logging.getLogger(__name__)


class DistributedTrainingError(UserError, RuntimeError):
    """The distributed job cannot start or did not finish; the message says why."""


def free_slots(spark: SparkSession) -> tuple[int, int]:
    """(task slots of the application, tasks running now): what a barrier stage can get."""
    context: Any = spark.sparkContext
    jsc = context._jsc.sc()
    profile = jsc.resourceProfileManager().defaultResourceProfile()
    slots = int(jsc.maxNumConcurrentTasks(profile))
    tracker = spark.sparkContext.statusTracker()
    running = 0
    for stage_id in tracker.getActiveStageIds():
        info = tracker.getStageInfo(stage_id)
        running += info.numActiveTasks if info else 0
    return slots, running


def check_slots(spark: SparkSession, workers: int, wait_s: float = 30.0) -> None:
    """Fail fast when the cluster cannot run ``workers`` tasks at once (on a cluster, waiting up
    to ``wait_s`` for executors that are still registering; in local mode, not at all)."""
    if str(spark.sparkContext.master).startswith("local"):
        wait_s = 0.0
    deadline = time.monotonic() + wait_s
    while True:
        slots, running = free_slots(spark)
        if slots - running >= workers:
            return
        if time.monotonic() >= deadline:
            raise DistributedTrainingError(
                f"training needs {workers} task slots at once (train.workers={workers}) but the "
                f"application has {slots} slot(s), {max(slots - running, 0)} free: lower "
                f"train.workers or give the job more executor cores"
            )
        time.sleep(1.0)


def check_checkpoint_path(path: str) -> None:
    """The checkpoint folder must be writable (and, on a cluster, shared by all executors)."""
    from interest import storage

    try:
        storage.check_writable(path)
    except OSError as exc:
        raise DistributedTrainingError(
            f"checkpoint path {exc}; set paths.checkpoints to a folder every executor can reach"
        ) from None


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def reserve_port(rng_seed: int | None = None) -> tuple[socket.socket, int]:
    """Bind a free port below the ephemeral range and keep it bound; returns (socket, port)."""
    import random

    low, _ = ephemeral_range()
    pool_low, pool_high = (10000, low - 1) if low > 11000 else (1024, 65535)
    rng = random.Random(rng_seed)
    for _ in range(200):
        port = rng.randint(pool_low, pool_high)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("", port))
            return sock, port
        except OSError:
            sock.close()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # crowded host: any free port
    sock.bind(("", 0))
    return sock, sock.getsockname()[1]


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when its task process goes away."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _barrier_task(
    cfg_dict: dict[str, Any],
    date: str,
    init_from: str | None,
    workers: int,
    attempt: int,
    relay: str,
    faults: str,
) -> Callable[[Iterable[int]], Iterable[str]]:
    """The function each barrier task runs (on an executor). ``faults``: the driver's
    ``INTEREST_FAULTS``, carried to the workers with the job (Python workers of a session started
    earlier do not see the driver's environment as it is now)."""

    def run(_rows: Iterable[int]) -> Iterator[str]:
        from pyspark import BarrierTaskContext

        ctx = BarrierTaskContext.get()
        rank = ctx.partitionId()
        host = ctx.getTaskInfos()[rank].address.split(":")[0]
        sock, port = reserve_port()
        sock.set_inheritable(True)
        try:
            peers = ctx.allGather(f"{host}:{port}")
            tf_config = {"cluster": {"worker": peers}, "task": {"type": "worker", "index": rank}}
            cores = max(int(ctx.cpus()), 1)
            # One scratch folder per job and rank, named so that the next attempt removes what a
            # killed attempt left (a killed task never runs its cleanup); the worker's TMPDIR points
            # into it, so every scratch file of the worker is removed with it.
            key = hashlib.sha1(json.dumps([cfg_dict, date], sort_keys=True, default=str).encode()).hexdigest()[:10]
            tmp = os.path.join(tempfile.gettempdir(), f"interest-worker-{key}-{rank}")
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            try:
                spec = Path(tmp) / "job.json"
                result, error = Path(tmp) / "result.json", Path(tmp) / "error.txt"
                spec.write_text(
                    json.dumps(
                        {
                            "config": cfg_dict,
                            "date": date,
                            "init_from": init_from,
                            "rank": rank,
                            "workers": workers,
                            "attempt": attempt,
                            "cores": cores,
                            "relay": relay,
                            "result": str(result),
                            "error": str(error),
                        }
                    )
                )
                env = {
                    **os.environ,
                    "TF_CONFIG": json.dumps(tf_config),
                    "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
                    "TF_NUM_INTRAOP_THREADS": str(cores),
                    "TF_NUM_INTEROP_THREADS": "1",
                    "TF_CPP_MIN_LOG_LEVEL": "2",
                    "PYTHONUNBUFFERED": "1",
                    "INTEREST_RESERVED_FD": str(sock.fileno()),
                    "TMPDIR": tmp,
                    "INTEREST_FAULTS": faults or os.environ.get("INTEREST_FAULTS", ""),
                }
                proc = subprocess.Popen(
                    [sys.executable, "-m", "interest.training.worker", str(spec)],
                    env=env,
                    preexec_fn=_die_with_parent,
                    pass_fds=(sock.fileno(),),
                    stdout=sys.stderr,
                    stderr=subprocess.STDOUT,
                )
                sock.close()  # the child holds the reservation now
                code = proc.wait()
                if code != 0:
                    why = error.read_text().strip() if error.exists() else f"exit code {code}"
                    if code == EXIT_RETRYABLE and not error.exists():
                        why += " (its step watchdog: no training step finished in train.step_timeout_s, a hang)"
                    raise RuntimeError(f"training worker {rank} on {host}:{port} failed: {why}")
                payload = result.read_text()
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            sock.close()
        yield payload

    return run


class ChiefRelay:
    """The chief worker's log lines, live: a TCP server on the driver that the chief connects to
    and sends each line it logs (epochs, steps, resumes); they are logged here as they arrive, so a
    long barrier stage is not silent until it returns. A chief that cannot connect costs nothing:
    its lines then come with its result."""

    def __init__(self, host: str) -> None:
        try:
            self._server = socket.create_server((host, 0))
        except OSError:  # a driver host name this machine cannot bind: listen everywhere
            self._server = socket.create_server(("", 0))
        self.address = f"{host}:{self._server.getsockname()[1]}"
        self.received = 0
        self._context = contextvars.copy_context()  # the stage and date of the lines logged here

    def __enter__(self) -> ChiefRelay:
        threading.Thread(target=self._context.run, args=(self._accept,), daemon=True, name="chief-relay").start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:  # closed: the stage is over
                return
            ctx = contextvars.copy_context()
            threading.Thread(target=ctx.run, args=(self._relay, conn), daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        with conn, conn.makefile("r", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                self.received += 1
                log.info(line.rstrip("\n"))


@dataclass(frozen=True)
class DistributedOutcome(TrainOutcome):
    attempts: int = 1
    chief_log: list[str] | None = None


def train_on_spark(spark: SparkSession, cfg: Config, date: str, init_from: str | None = None) -> DistributedOutcome:
    """Train ``cfg.model.encoder`` with ``cfg.train.workers`` barrier tasks; returns the chief's export."""
    with logs.stage("train", date):
        return _train_on_spark(spark, cfg, date, init_from)


def _train_on_spark(spark: SparkSession, cfg: Config, date: str, init_from: str | None) -> DistributedOutcome:
    workers = cfg.train.workers
    if cfg.train.batch_size % workers:
        raise DistributedTrainingError(
            f"train.batch_size ({cfg.train.batch_size}) must divide evenly over {workers} workers"
        )
    layout = Layout.of(cfg, date)
    check_training_inputs(layout)  # a missing or empty sequences path fails here, on the driver
    check_checkpoint_path(checkpoint_dir(cfg, layout, init_from))
    check_slots(spark, workers)
    sc = spark.sparkContext
    label = JobLabels(spark, "train", date)
    failures: list[str] = []
    with ChiefRelay(sc.getConf().get("spark.driver.host") or "127.0.0.1") as relay:
        return _attempts(sc, cfg, date, init_from, relay, label, failures)


def _attempts(
    sc: Any, cfg: Config, date: str, init_from: str | None, relay: ChiefRelay, label: JobLabels, failures: list[str]
) -> DistributedOutcome:
    """Run the barrier stage until it succeeds or ``train.max_failures`` retries are spent."""
    workers, faults = cfg.train.workers, os.environ.get("INTEREST_FAULTS", "")
    for attempt in range(cfg.train.max_failures + 1):
        if attempt:
            log.info(
                f"attempt {attempt + 1}/{cfg.train.max_failures + 1}: running the barrier "
                f"stage again; workers resume from the last checkpoint"
            )
        label(f"{cfg.model.encoder}, {workers} workers, attempt {attempt + 1}")
        try:
            rdd = (
                sc.parallelize(range(workers), workers)
                .barrier()
                .mapPartitions(_barrier_task(cfg.to_dict(), date, init_from, workers, attempt, relay.address, faults))
            )
            results = [json.loads(r) for r in rdd.collect()]
        except Exception as exc:  # Py4JJavaError wrapping the task's failure
            reason = _short_reason(exc)
            failures.append(reason)
            log.warning(f"attempt {attempt + 1} failed: {reason}")
            continue
        checksums = {r["weights_checksum"] for r in results}
        if len(checksums) != 1:
            raise DistributedTrainingError(f"workers ended with different weights: {sorted(checksums)}")
        chief = next(r for r in results if r["rank"] == 0)
        if not relay.received:  # the chief could not reach the driver: its lines, late
            for line in chief["log"]:
                log.info(line)
        return DistributedOutcome(chief["model_dir"], chief["metrics"], attempt + 1, chief["log"])
    raise DistributedTrainingError(
        f"training failed {len(failures)} time(s), the limit (train.max_failures="
        f"{cfg.train.max_failures}) is reached; last error: {failures[-1]}"
    )


def _short_reason(exc: BaseException) -> str:
    """The most telling line of a Spark task failure (the worker's own error when present)."""
    text = str(exc)
    for marker in ("RuntimeError: training worker", "DistributedTrainingError:", "Error:"):
        for line in text.splitlines():
            if marker in line:
                return line.strip()[:500]
    return text.strip().splitlines()[0][:500] if text.strip() else type(exc).__name__
