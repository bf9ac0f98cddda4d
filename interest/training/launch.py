"""Where a training run goes: one rule for every job (jobs/train.py and the nightly)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from interest.config import Config
from interest.spark import launched_by_spark_submit

if TYPE_CHECKING:  # TensorFlow loads only when a model is really trained
    from pyspark.sql import SparkSession

    from interest.training.run import TrainOutcome


def trains_on_spark(cfg: Config) -> bool:
    """Spark barrier tasks when several workers are asked for, or when the job was submitted to a
    cluster (its driver may be a small edge node; the work belongs on an executor); otherwise
    the job's own process, with no Spark at all."""
    return cfg.train.workers > 1 or launched_by_spark_submit()


def train_model(
    cfg: Config, date: str, spark: SparkSession | None = None, init_from: str | None = None
) -> TrainOutcome:
    """Train ``cfg.model.encoder`` on ``date``'s sequences where ``trains_on_spark`` says, starting
    from the exported model ``init_from`` when given."""
    if not trains_on_spark(cfg):
        from interest.training.run import train_and_export

        return train_and_export(cfg, date, init_from=init_from)
    if spark is None:
        raise ValueError("training on Spark needs a SparkSession")
    from interest.training.distributed import train_on_spark

    return train_on_spark(spark, cfg, date, init_from)
