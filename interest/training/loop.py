"""The training loop: one custom loop for 1..N workers under any tf.distribute strategy.

Keras 3 ``Model.fit`` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so the
step is a ``tf.function`` run with ``strategy.run``; gradients are all-reduced by the strategy and
weights stay identical on every worker. Around it: Adam with linear warm-up and cosine decay,
validation NDCG@10 every epoch with early stopping (best weights kept), checkpoints every K steps
that a restarted run resumes from, a progress line per epoch, and TensorBoard scalars.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from interest import faults
from interest.config import VALID_SEED, Config
from interest.data.files import TrainData
from interest.data.reader import petastorm_batches, split_view, trim_padding
from interest.errors import EXIT_RETRYABLE
from interest.models.encoders import Encoder, build_encoder, encoder_args
from interest.models.objective import (
    NextItemTask,
    augmented_view,
    contrastive_loss,
    resolve_batch_by_length,
    routed_interests,
)
from interest.models.precision import gpu_bfloat16, native_bfloat16, resolve_precision
from interest.scoring.offline import evaluate_split

log = logging.getLogger(__name__)


class StepWatchdog:
    """Ends the process when no training step completes for ``timeout_s`` seconds.

    A hung step (a native deadlock, a lost peer that collectives keep waiting for) must not
    stall a nightly job forever: the process exits with a message, so a scheduler retry or the
    distributed launcher's next attempt resumes from the last checkpoint.
    """

    def __init__(self, timeout_s: float, describe: Callable[[], str]) -> None:
        import threading

        self.timeout_s, self.describe = timeout_s, describe
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="step-watchdog")

    def beat(self) -> None:
        self._last = time.monotonic()

    def _watch(self) -> None:
        while not self._stop.wait(min(30.0, self.timeout_s / 4)):
            if time.monotonic() - self._last > self.timeout_s:
                log.error(
                    f"no training step finished in {self.timeout_s:.0f}s ({self.describe()}); "
                    "stopping the process so the job can be retried from its last checkpoint"
                )
                os._exit(EXIT_RETRYABLE)

    def __enter__(self) -> StepWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


@dataclass
class WorkerInfo:
    """Where this process sits in a (possibly distributed) training job."""

    rank: int = 0
    workers: int = 1
    attempt: int = 0  # how many times this training stage has been (re)started

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


@dataclass
class TrainResult:
    encoder: Encoder
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_valid: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0
    resumed_from_step: int | None = None
    stopped_early: bool = False
    objective: str = ""  # what train.objective resolved to (auto: by catalogue size)
    precision: str = "float32"  # what train.precision resolved to (auto: by the hardware)


def learning_rate(cfg: Config, total_steps: int) -> keras.optimizers.schedules.LearningRateSchedule:
    t = cfg.train
    warmup = min(t.warmup_steps, max(total_steps - 1, 0))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=t.learning_rate * 1e-2 if warmup else t.learning_rate,
        decay_steps=max(total_steps - warmup, 1),
        alpha=0.05,
        warmup_target=t.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def training_loss(
    encoder: Encoder, task: NextItemTask, inputs: dict[str, tf.Tensor], targets: tf.Tensor, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """(sum of losses, number of targets) of one batch: inputs and targets [B, L], seed [2]. An
    encoder with interests per position trains its user vector and the nearest interest, half each."""
    out = encoder(inputs, training=True)
    loss_sum, n = task(out["sequence"], inputs["item_idx"], targets, encoder.item_table, seed)
    if "position_interests" in out:
        routed = routed_interests(out["position_interests"], targets, encoder.item_table)  # [B, L, D]
        loss_sum = 0.5 * (loss_sum + task(routed, inputs["item_idx"], targets, encoder.item_table, seed)[0])
    if task.contrastive > 0:
        if task.views == "augment":  # two augmented views (CL4SRec); the next-item loss keeps the original
            keys = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
            first = encoder(augmented_view(inputs, keys[0]), training=True)["user"]  # [B, D]
            other = encoder(augmented_view(inputs, keys[1]), training=True)["user"]
        else:  # a second dropout view of the same histories (DuoRec)
            first, other = out["user"], encoder(inputs, training=True)["user"]  # [B, D]
        term = contrastive_loss(first, other, targets[:, -1], task.temperature)
        loss_sum += task.contrastive * term * tf.cast(n, loss_sum.dtype)  # per target, as the loss is
    return loss_sum, n


class Trainer:
    """Owns the encoder, the optimizer and the compiled step for one training run."""

    def __init__(
        self,
        cfg: Config,
        data: TrainData,
        strategy: tf.distribute.Strategy | None = None,
        worker: WorkerInfo | None = None,
        init_from: str | None = None,
    ) -> None:
        self.cfg, self.data = cfg, data
        self.strategy = strategy or tf.distribute.get_strategy()
        self.worker = worker or WorkerInfo()
        self.log = log.info if self.worker.is_chief else (lambda _msg: None)  # the chief speaks for all
        t = cfg.train
        self.global_batch = t.batch_size  # over all workers: the model does not depend on N
        self.steps_per_epoch = max(1, math.ceil(data.train_rows / self.global_batch))
        self.total_steps = self.steps_per_epoch * t.epochs
        keras.utils.set_random_seed(t.seed)
        native = native_bfloat16(gpu=gpu_bfloat16()) if t.precision != "float32" else None
        self.precision, why = resolve_precision(t.precision, native)
        if t.precision == "mixed_bfloat16" and not native and self.worker.is_chief:
            log.warning(why)  # emulated bfloat16: the run is several times slower than it needs to be
        else:
            self.log(why)
        with self.strategy.scope():
            args = encoder_args(cfg.model, data.spec)
            self.encoder = build_encoder(cfg.model.encoder, precision=self.precision, **args)
            if init_from:  # an exported model's weights (the nightly's warm start)
                from interest.models.export import load_model, warm_start

                grown = warm_start(self.encoder, load_model(init_from).encoder, data.vocab)
                self.log(f"warm start from {init_from}" + (f" (grown: {', '.join(grown)})" if grown else ""))
            self.optimizer = keras.optimizers.Adam(learning_rate(cfg, self.total_steps), beta_1=0.9, beta_2=0.98)
            self.optimizer.build(self.encoder.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.best = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_ndcg")
            self.since_best = tf.Variable(0, dtype=tf.int64, trainable=False, name="since_best")
        self._best_weights: list[np.ndarray] | None = None
        self.task = NextItemTask.for_run(t, data.item_counts, data.spec.vocab_size)
        self.by_length = resolve_batch_by_length(t.batch_by_length, self.task.objective)
        self._train_step = self._make_train_step()
        strategy = self.strategy

        @tf.function
        def mean_over_workers(x):
            return strategy.reduce(tf.distribute.ReduceOp.MEAN, strategy.run(tf.identity, args=(x,)), axis=None)

        self._mean_over_workers = mean_over_workers

    def _make_train_step(self) -> Callable:
        t, strategy, encoder = self.cfg.train, self.strategy, self.encoder
        replicas = strategy.num_replicas_in_sync
        task, by_length = self.task, self.by_length

        # Batches by length hold few positions (short histories) or many (long ones): each is
        # divided by the positions an average batch holds, not its own, so a position weighs the
        # same in every batch, as in random batches (dividing by its own count would weigh a short
        # history's steps several times a long one's)
        per_batch = float(self.data.item_counts.sum()) / max(self.data.train_rows, 1) * self.global_batch

        def loss_and_grads(inputs, targets, seed):
            with tf.GradientTape() as tape:
                loss_sum, n = training_loss(encoder, task, inputs, targets, seed)
                if by_length:
                    loss = loss_sum / max(per_batch, 1.0)
                else:
                    loss = loss_sum / tf.maximum(n, 1.0) / replicas
            return loss_sum, n, tape.gradient(loss, encoder.trainable_variables)

        if t.jit_compile:  # XLA fuses the forward and backward pass; the all-reduce stays outside it
            loss_and_grads = tf.function(loss_and_grads, jit_compile=True)

        def replica_step(batch, step):
            seed = tf.stack(
                [
                    tf.cast(t.seed, tf.int64),
                    step * 1000 + tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int64),
                ]
            )
            inputs, targets = split_view(batch, "train")  # [B, L] each
            if by_length and not t.jit_compile:  # XLA would compile once per width
                inputs, targets = trim_padding(inputs, targets)  # [B, l] each, l <= L
            loss_sum, n, grads = loss_and_grads(inputs, targets, seed)
            self.optimizer.apply_gradients(zip(grads, encoder.trainable_variables))
            return loss_sum, n

        @tf.function
        def train_step(iterator, step):
            loss_sum, n = strategy.run(replica_step, args=(next(iterator), step))
            return (
                strategy.reduce(tf.distribute.ReduceOp.SUM, loss_sum, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, n, axis=None),
            )

        return train_step

    def _dataset(self, stack: contextlib.ExitStack) -> tf.distribute.DistributedDataset:
        t, data = self.cfg.train, self.data

        def make(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            shards = ctx.num_input_pipelines
            return stack.enter_context(
                petastorm_batches(
                    data.train_path,
                    data.spec,
                    ctx.get_per_replica_batch_size(self.global_batch),
                    shuffle=True,
                    seed=t.seed + 7919 * self.worker.attempt,
                    shard=ctx.input_pipeline_id if shards > 1 else None,
                    num_shards=shards if shards > 1 else None,
                    # one reader thread: the row order is a function of the seed, so a run is
                    # reproducible (two read faster, in the order row groups finish: BENCHMARKS.md)
                    workers=1,
                    by_length=self.by_length,
                )
            )

        return self.strategy.distribute_datasets_from_function(make)

    def _checkpoints(
        self, directory: str | None
    ) -> tuple[tf.train.CheckpointManager | None, tf.train.CheckpointManager | None]:
        """Managers for the training state and the best weights.

        Under several workers every one saves (variables may need collectives), but only the
        chief writes to ``directory``; the others write to a private folder removed afterwards.
        Everyone restores from the chief's folder, so all resume from the same step.
        """
        if not directory:
            return None, None
        target = directory if self.worker.is_chief else os.path.join(directory, f"_worker{self.worker.rank}")
        state = tf.train.Checkpoint(
            encoder=self.encoder, optimizer=self.optimizer, step=self.step, best=self.best, since_best=self.since_best
        )
        best = tf.train.Checkpoint(encoder=self.encoder)
        return (
            tf.train.CheckpointManager(state, target, max_to_keep=2),
            tf.train.CheckpointManager(best, os.path.join(target, "best"), max_to_keep=1),
        )

    def _agree(self, value: float) -> float:
        """The mean of a value over workers, so every worker takes the same early-stop decision."""
        if self.strategy.num_replicas_in_sync == 1:
            return value
        return float(self._mean_over_workers(tf.constant(value, tf.float64)))

    def _validate(self) -> dict[str, float]:
        e = self.cfg.eval
        return evaluate_split(
            self.encoder, self.data.eval_rows, "valid", k=e.k, negatives=e.sampled_negatives, seeds=(VALID_SEED,)
        )

    def fit(self, checkpoint_dir: str | None = None, tensorboard_dir: str | None = None) -> TrainResult:
        """Train; checkpoints go to ``checkpoint_dir`` (a local path or a URL: TensorFlow writes
        into local scratch, and the chief mirrors it to the URL after every save)."""
        with _checkpoint_mirror(checkpoint_dir, self.worker.is_chief) as (local, push):
            return self._fit(local, tensorboard_dir, push)

    def _fit(self, checkpoint_dir: str | None, tensorboard_dir: str | None, push: Callable[[], None]) -> TrainResult:
        t = self.cfg.train
        self._metric = f"{t.early_stop_metric}@{self.cfg.eval.k}"
        manager, best_manager = self._checkpoints(checkpoint_dir)
        result = TrainResult(self.encoder, objective=self.task.objective, precision=self.precision)
        self._resume(manager, checkpoint_dir, result)
        writer = tf.summary.create_file_writer(tensorboard_dir) if tensorboard_dir and self.worker.is_chief else None
        started = time.perf_counter()
        self._announce()
        with contextlib.ExitStack() as stack:
            watchdog = stack.enter_context(
                StepWatchdog(t.step_timeout_s, lambda: f"at step {int(self.step.numpy())}, worker {self.worker.rank}")
            )
            iterator = iter(self._dataset(stack))
            for epoch in range(int(self.step.numpy()) // self.steps_per_epoch, t.epochs):
                row = self._run_epoch(epoch, iterator, watchdog, manager, push)
                if (epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs:
                    watchdog.beat()  # validation is not a hang
                    self._validate_epoch(row, result, best_manager, push)
                result.history.append(row)
                self.log(_progress_line(row, t.epochs, self._metric))
                _write_scalars(writer, row, int(self.step.numpy()))
                if manager is not None:
                    manager.save(checkpoint_number=int(self.step.numpy()))
                    push()
                if int(self.since_best.numpy()) >= t.patience:
                    result.stopped_early = True
                    self.log(f"early stop: no {self._metric} gain in {t.patience} evaluations")
                    break
        self._restore_best(result, best_manager)
        result.steps = int(self.step.numpy())
        result.seconds = time.perf_counter() - started
        if not self.worker.is_chief and checkpoint_dir:
            shutil.rmtree(os.path.join(checkpoint_dir, f"_worker{self.worker.rank}"), ignore_errors=True)
        return result

    def _resume(self, manager: tf.train.CheckpointManager | None, directory: str | None, result: TrainResult) -> None:
        """Restore the training state of the latest checkpoint, if a previous attempt left one."""
        latest = tf.train.latest_checkpoint(directory) if directory else None
        if manager is not None and latest:
            manager.checkpoint.restore(latest)
            result.resumed_from_step = int(self.step.numpy())
            self.log(f"resumed from checkpoint at step {result.resumed_from_step} ({latest})")
        self._chief_best = tf.train.latest_checkpoint(os.path.join(directory, "best")) if directory else None

    def _announce(self) -> None:
        t = self.cfg.train
        self.log(
            f"{self.cfg.model.encoder}: {self.data.train_rows:,} sequences, "
            f"{self.worker.workers} worker(s), global batch {self.global_batch}, "
            f"{self.steps_per_epoch} steps/epoch, up to {t.epochs} epochs, "
            f"{self.encoder.count_params():,} parameters, objective {self.task.objective}, "
            f"{'batches by length' if self.by_length else 'random batches'}"
        )

    def _run_epoch(
        self,
        epoch: int,
        iterator: Any,
        watchdog: StepWatchdog,
        manager: tf.train.CheckpointManager | None,
        push: Callable[[], None],
    ) -> dict[str, Any]:
        """Train until the end of ``epoch`` (from wherever a resumed run stands); its history row."""
        t = self.cfg.train
        tic = last_line = time.perf_counter()
        loss_sum, count, steps = 0.0, 0.0, 0
        while int(self.step.numpy()) < (epoch + 1) * self.steps_per_epoch:
            step = int(self.step.numpy())
            faults.maybe_fail(f"train_step_{step}")  # off unless a fault-matrix test asks for it
            ls, n = self._train_step(iterator, tf.constant(step, tf.int64))
            watchdog.beat()
            loss_sum, count, steps = loss_sum + float(ls), count + float(n), steps + 1
            self.step.assign_add(1)
            if manager is not None and int(self.step.numpy()) % t.checkpoint_every_steps == 0:
                manager.save(checkpoint_number=int(self.step.numpy()))
                push()
            now, done = time.perf_counter(), int(self.step.numpy()) - epoch * self.steps_per_epoch
            if now - last_line >= t.progress_every_s and done < self.steps_per_epoch:
                last_line = now
                rate = steps / max(now - tic, 1e-9)
                self.log(_step_line(epoch, t.epochs, done, self.steps_per_epoch, loss_sum / max(count, 1.0), rate))
        seconds = time.perf_counter() - tic
        return {
            "epoch": epoch + 1,
            "step": int(self.step.numpy()),
            "loss": loss_sum / max(count, 1.0),
            "sequences_per_s": steps * self.global_batch / max(seconds, 1e-9),
            "seconds": seconds,
            "lr": float(self.optimizer.learning_rate.numpy()),
        }

    def _validate_epoch(
        self,
        row: dict[str, Any],
        result: TrainResult,
        best_manager: tf.train.CheckpointManager | None,
        push: Callable[[], None],
    ) -> None:
        """Add the validation metrics to ``row``; keep the weights when the early-stop metric improved."""
        row.update({f"valid_{name}": v for name, v in self._validate().items() if name != "users"})
        if f"valid_{self._metric}" not in row:  # sampled metrics omitted (tiny catalogue)
            self._metric = f"full_{self.cfg.train.early_stop_metric.split('_')[1]}@{self.cfg.eval.k}"
        score = self._agree(row[f"valid_{self._metric}"])
        if score <= float(self.best.numpy()):
            self.since_best.assign_add(1)
            return
        self.best.assign(score)
        self.since_best.assign(0)
        result.best_epoch = row["epoch"]
        result.best_valid = {k: v for k, v in row.items() if k.startswith("valid_")}
        self._best_weights = self.encoder.get_weights()
        if best_manager is not None:
            best_manager.save(checkpoint_number=int(self.step.numpy()))
            push()

    def _restore_best(self, result: TrainResult, best_manager) -> None:
        """End on the best validated weights: from memory, or from the best checkpoint when the
        best epoch happened before a restart."""
        if self._best_weights is not None:
            self.encoder.set_weights(self._best_weights)
        elif best_manager is not None and self._chief_best is not None:
            best_manager.checkpoint.restore(self._chief_best).expect_partial()


@contextlib.contextmanager
def _checkpoint_mirror(directory: str | None, is_chief: bool):
    """(local checkpoint folder, push): the folder itself for a local path; for a URL, a scratch
    copy of what the URL holds (so a restarted worker resumes) and a push that mirrors the chief's
    folder back to the URL."""
    from interest import storage

    if directory is None:
        yield None, lambda: None
    elif storage.is_local(directory):
        yield storage.local_path(directory), lambda: None
    else:
        with storage.scratch("interest-ckpt-") as local:
            if storage.exists(directory):
                storage.download(directory, local)
            yield local, (lambda: storage.mirror(local, directory)) if is_chief else (lambda: None)


def _write_scalars(writer: Any, row: dict[str, Any], step: int) -> None:
    """The epoch's numbers as TensorBoard scalars (the chief only: others have no writer)."""
    if writer is None:
        return
    with writer.as_default(step=step):
        for name, value in row.items():
            if isinstance(value, float):
                tf.summary.scalar(name, value)


def _step_line(epoch: int, epochs: int, done: int, steps_per_epoch: int, loss: float, rate: float) -> str:
    """Within an epoch: the step reached, the running loss, steps/s and the time left in the epoch."""
    eta = (steps_per_epoch - done) / max(rate, 1e-9)
    return (
        f"epoch {epoch + 1:>3}/{epochs}  step {done:>5}/{steps_per_epoch}  loss {loss:.4f}  "
        f"{rate:.2f} steps/s  epoch ETA {eta:.0f}s"
    )


def _progress_line(row: dict[str, Any], epochs: int, metric: str) -> str:
    """One line per epoch: loss, throughput, learning rate and the validation metrics."""
    line = (
        f"epoch {row['epoch']:>3}/{epochs}  loss {row['loss']:.4f}  "
        f"{row['sequences_per_s']:>8,.0f} seq/s  lr {row['lr']:.2e}"
    )
    k = metric.split("@")[1]
    if f"valid_full_ndcg@{k}" in row:
        line += f"  valid NDCG@{k} {row[f'valid_full_ndcg@{k}']:.4f}  HR@{k} {row[f'valid_full_hr@{k}']:.4f}"
        if f"valid_sampled_ndcg@{k}" in row:
            line += (
                f"  (sampled: NDCG@{k} {row[f'valid_sampled_ndcg@{k}']:.4f}  HR@{k} {row[f'valid_sampled_hr@{k}']:.4f})"
            )
    return line + f"  {row['seconds']:.1f}s"
