"""Run tracking in MLflow, beside TensorBoard: every training run (its parameters, per-epoch
metrics, final metrics and model folder) and every nightly run (stage timings, gate results,
drift, next-day quality) becomes an MLflow run that can be compared across dates.

The store is ``tracking.uri`` (a tracking server on a cluster) or, by default, a file store at
``{paths.root}/mlruns`` when that is local; a remote root without a URI tracks nothing (MLflow's file
store is local). Tracking never fails a job: an unreachable server is one warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

from interest import storage
from interest.config import Config

EXPERIMENT = "interest"  # runs go to interest/<kind>: train, nightly, ...

log = logging.getLogger(__name__)


def tracking_uri(cfg: Config) -> str | None:
    """Where runs are tracked, or None when tracking is off (or has nowhere local to go)."""
    t = cfg.tracking
    if not t.enabled:
        return None
    if t.uri:
        return t.uri
    where = cfg.paths.mlruns
    return f"file://{storage.local_path(where)}" if storage.is_local(where) else None


def _key(name: str) -> str:
    """MLflow keys allow letters, digits and ``_-. /``: ``full_ndcg@10`` -> ``full_ndcg_at_10``."""
    return "".join(c if c.isalnum() or c in "_-. /" else "_at_" if c == "@" else "_" for c in name)


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``a.b.c`` keys (MLflow has flat params and metrics)."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = _key(f"{prefix}{k}")
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


class Run:
    """One MLflow run; every call is a no-op when tracking is off or the store went away."""

    def __init__(self, client: Any = None, run_id: str | None = None) -> None:
        self.client, self.run_id = client, run_id

    def _call(self, what: str, method: str, **kwargs: Any) -> None:
        if self.client is None:
            return
        try:
            getattr(self.client, method)(self.run_id, **kwargs)
        except Exception as exc:  # tracking must never fail the job
            log.warning(f"MLflow: could not {what} ({type(exc).__name__}: {str(exc)[:200]}); tracking stops")
            self.client = None

    def params(self, values: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(values)
        params = [Param(k, str(v)[:6000]) for k, v in flat.items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self._call("log parameters", "log_batch", params=params[i : i + 100])

    def metrics(self, values: Mapping[str, Any], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        flat = flatten(values)
        metrics = [Metric(k, float(v), now, step) for k, v in flat.items() if isinstance(v, (int, float))]
        for i in range(0, len(metrics), 1000):
            self._call("log metrics", "log_batch", metrics=metrics[i : i + 1000])

    def tags(self, values: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        tags = [RunTag(k, str(v)[:5000]) for k, v in flatten(values).items() if v is not None]
        self._call("set tags", "log_batch", tags=tags)


@contextlib.contextmanager
def track(cfg: Config, kind: str, name: str, tags: Mapping[str, Any] | None = None) -> Iterator[Run]:
    """An MLflow run named ``name`` in experiment ``interest/<kind>``, ended
    FINISHED, or FAILED when the block raises."""
    uri = tracking_uri(cfg)
    if uri is None:
        yield Run()
        return
    try:
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # the local default, by choice
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        experiment = f"{EXPERIMENT}/{kind}"
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        run_id = client.create_run(
            experiment_id, run_name=name, tags={k: str(v) for k, v in (tags or {}).items()}
        ).info.run_id
    except Exception as exc:
        log.warning(f"MLflow at {uri} is not reachable ({type(exc).__name__}: {str(exc)[:200]}); not tracked")
        yield Run()
        return
    run = Run(client, run_id)
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    finally:
        run._call("end the run", "set_terminated", status=status)
    log.info(f"tracked in MLflow: {uri} run {run_id}")
