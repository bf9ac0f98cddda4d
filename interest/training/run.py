"""The training stage for one run date: sessionize outputs in, an exported model version out."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import tensorflow as tf

from interest import logs, storage, tracking
from interest.config import Config
from interest.data.files import TrainData, training_data
from interest.layout import Layout
from interest.models.encoders import Encoder, build_encoder
from interest.models.export import new_version, save_model
from interest.scoring.offline import evaluate_popularity, test_metrics
from interest.scoring.tasks import EncoderScorer, PopularityScorer
from interest.training.loop import Trainer, TrainResult, WorkerInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOutcome:
    """A training run's result: the exported model (chief only) and its metrics.json."""

    model_dir: str | None  # None on non-chief workers
    metrics: dict[str, Any]


# Settings that do not change what is being trained: a run may resume from a checkpoint written
# under different values of these (more workers, another failure budget).
_NOT_IN_CHECKPOINT_KEY = {
    "workers",
    "max_failures",
    "checkpoint_every_steps",
    "eval_every",
    "step_timeout_s",
    "progress_every_s",
    "jit_compile",
}


def checkpoint_dir(cfg: Config, layout: Layout, init_from: str | None = None) -> str:
    """Where a run checkpoints: per encoder, date and training configuration, so a restarted run
    resumes its own checkpoints and never another configuration's."""
    import hashlib
    import json

    train = {k: v for k, v in asdict(cfg.train).items() if k not in _NOT_IN_CHECKPOINT_KEY}
    key = json.dumps(
        {"model": asdict(cfg.model), "train": train, "max_len": cfg.sessionize.max_len, "init_from": init_from},
        sort_keys=True,
    )
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return layout.checkpoints(cfg.model.encoder, digest)


def train_and_export(
    cfg: Config,
    date: str,
    strategy: tf.distribute.Strategy | None = None,
    worker: WorkerInfo | None = None,
    version: str | None = None,
    on_trained: Callable[[Encoder], None] | None = None,
    init_from: str | None = None,
) -> TrainOutcome:
    """Train ``cfg.model.encoder`` on ``date``'s sequences; the chief evaluates and exports.

    ``on_trained`` sees the final (best) encoder on every worker, before the chief exports.
    ``init_from``: an exported model to start from (the nightly's warm start).
    """
    with logs.stage("train", date):
        return _train_and_export(cfg, date, strategy, worker or WorkerInfo(), version, on_trained, init_from)


def _train_and_export(
    cfg: Config,
    date: str,
    strategy: tf.distribute.Strategy | None,
    worker: WorkerInfo,
    version: str | None,
    on_trained: Callable[[Encoder], None] | None,
    init_from: str | None,
) -> TrainOutcome:
    started = time.perf_counter()
    layout = Layout.of(cfg, date)
    data = training_data(cfg, layout)
    ckpt = checkpoint_dir(cfg, layout, init_from)
    tensorboard = layout.report("tensorboard", cfg.model.encoder)
    with storage.local_output(tensorboard) as board:  # TensorFlow writes local files only
        result = Trainer(cfg, data, strategy, worker, init_from).fit(ckpt, board)
    if result.precision != "float32":  # evaluate and export the model as it is served: float32
        args: dict[str, Any] = dict(result.encoder.args)
        served = build_encoder(result.encoder.kind, **args)
        served.set_weights(result.encoder.get_weights())
        result.encoder = served
    if on_trained is not None:
        on_trained(result.encoder)
    if not worker.is_chief:
        return TrainOutcome(None, {})
    metrics = final_metrics(cfg, date, data, result, worker, time.perf_counter() - started)
    config = {
        "config": cfg.to_dict(),
        "spec": asdict(data.spec),
        "date": date,
        "train_path": data.train_path,
        "init_from": init_from,
    }
    model_dir = save_model(
        result.encoder, data.vocab, config, metrics, layout.paths.models, version or new_version(date)
    )
    storage.delete(ckpt)  # finished: a re-run of the date starts afresh
    _track(cfg, date, model_dir, metrics)
    k, test, pop = cfg.eval.k, metrics["test_counted"], metrics["popularity"]["test_counted"]
    log.info(
        f"done in {metrics['wall_seconds']:.1f}s, best epoch {result.best_epoch}: test "
        f"NDCG@{k} {test[f'full_ndcg@{k}']:.4f} HR@{k} {test[f'full_hr@{k}']:.4f} (full ranking, "
        f"{test['excluded_targets']} unknown targets counted as misses); "
        f"popularity NDCG@{k} {pop[f'full_ndcg@{k}']:.4f}"
    )
    log.info(f"model: {model_dir}")
    return TrainOutcome(model_dir, metrics)


def _track(cfg: Config, date: str, model_dir: str, metrics: dict[str, Any]) -> None:
    """The training run in MLflow: parameters, one step per epoch, the final metrics, the model."""
    tags = {"date": date, "encoder": cfg.model.encoder, "model_dir": model_dir, "version": storage.name(model_dir)}
    with tracking.track(cfg, "train", f"{cfg.model.encoder} dt={date}", tags) as run:
        run.params({"date": date, "model": asdict(cfg.model), "train": asdict(cfg.train), "eval": asdict(cfg.eval)})
        for row in metrics["history"]:
            run.metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
        keys = ("test", "test_counted", "valid", "popularity", "train_seconds", "wall_seconds", "steps")
        run.metrics({k: metrics[k] for k in keys})


def final_metrics(
    cfg: Config, date: str, data: TrainData, result: TrainResult, worker: WorkerInfo, wall_s: float
) -> dict[str, Any]:
    """metrics.json of a trained model: the test split for the best weights and for popularity,
    the validation at the best epoch, and the run's facts and history."""
    e = cfg.eval
    seeds = tuple(e.seeds)
    popularity = {
        "valid": evaluate_popularity(data.eval_rows, data.item_counts, "valid", e.k, e.sampled_negatives, seeds),
        **test_metrics(
            PopularityScorer(data.item_counts), data.eval_rows, len(data.item_counts), e.k, e.sampled_negatives, seeds
        ),
    }
    scorer = EncoderScorer(result.encoder.kind, result.encoder)
    vocab_size = int(result.encoder.args["vocab_size"])
    return {
        "encoder": cfg.model.encoder,
        "date": date,
        "workers": worker.workers,
        "train_rows": data.train_rows,
        "eval_users": int(len(data.eval_rows["item_idx"])),
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "objective": result.objective,
        "precision": result.precision,  # what train.precision resolved to on this machine
        "steps": result.steps,
        "resumed_from_step": result.resumed_from_step,
        "train_seconds": round(result.seconds, 2),
        "wall_seconds": round(wall_s, 2),
        "valid": result.best_valid,
        **test_metrics(scorer, data.eval_rows, vocab_size, e.k, e.sampled_negatives, seeds),
        "popularity": popularity,
        "history": result.history,
    }
