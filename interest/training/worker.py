"""One distributed training worker: ``python -m interest.training.worker JOB.json``.

Started by a barrier task (see interest.training.distributed) with ``TF_CONFIG`` set. Runs the
same ``train_and_export`` as a single process, under MultiWorkerMirroredStrategy, then writes
the result (rank, the chief's model folder and metrics, a checksum of the final weights and the
chief's log lines) to the path the task gave it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import sys
from pathlib import Path


def weights_checksum(encoder) -> str:
    """A digest of every weight's bytes: equal on all workers iff the weights are identical."""
    digest = hashlib.sha1()
    for w in encoder.get_weights():
        digest.update(w.tobytes())
    return digest.hexdigest()


class PortClashError(RuntimeError):
    """Another process bound this worker's port before TensorFlow could."""


def release_reserved_port() -> None:
    """Close the socket the barrier task reserved our port with, right before TF binds it."""
    fd = os.environ.pop("INTEREST_RESERVED_FD", None)
    if fd is not None:
        try:
            os.close(int(fd))
        except OSError:
            pass


def _collect_log_lines(relay: str | None) -> list[str]:
    """Log to this process's stdout (the executor's log) and keep the messages for the result;
    with ``relay`` (the driver's ``host:port``), also send each one there as it is logged."""
    from interest import logs

    logs.setup()
    lines: list[str] = []
    stream = None
    if relay:
        host, port = relay.rsplit(":", 1)
        try:
            stream = socket.create_connection((host, int(port)), timeout=10).makefile("w", encoding="utf-8")
        except OSError as exc:
            logging.getLogger(__name__).warning(f"the driver's log relay {relay} is unreachable ({exc})")

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            nonlocal stream
            message = record.getMessage()
            lines.append(message)
            if stream is not None:
                try:
                    stream.write(message.replace("\n", " ") + "\n")
                    stream.flush()
                except OSError:
                    stream = None  # the driver went away: the lines still come with the result

    logging.getLogger(logs.ROOT).addHandler(Keep(logging.INFO))
    return lines


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(job["cores"])
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from interest.config import from_dict
    from interest.training.loop import WorkerInfo
    from interest.training.run import train_and_export

    cfg = from_dict(job["config"])
    from interest import storage

    storage.configure_from(cfg)
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING, timeout_seconds=600.0
    )
    address = json.loads(os.environ["TF_CONFIG"])["cluster"]["worker"][job["rank"]]
    release_reserved_port()
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except tf.errors.UnknownError as exc:
        if "gRPC server" not in str(exc):
            raise
        message = (
            f"port clash: the TensorFlow server could not bind {address} (another process "
            "took the port); the stage will be retried with new ports"
        )
        Path(job["error"]).write_text(f"PortClashError: {message}")
        raise PortClashError(message) from None
    worker = WorkerInfo(rank=job["rank"], workers=job["workers"], attempt=job["attempt"])
    lines = _collect_log_lines(job.get("relay") if worker.is_chief else None)
    captured: dict = {}
    try:
        outcome = train_and_export(
            cfg,
            job["date"],
            strategy,
            worker,
            on_trained=lambda enc: captured.update(checksum=weights_checksum(enc)),
            init_from=job["init_from"],
        )
    except BaseException as exc:
        Path(job["error"]).write_text(f"{type(exc).__name__}: {exc}")
        raise
    Path(job["result"]).write_text(
        json.dumps(
            {
                "rank": worker.rank,
                "model_dir": outcome.model_dir,
                "metrics": outcome.metrics,
                "weights_checksum": captured["checksum"],
                "log": lines,
            },
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
