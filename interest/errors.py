"""The errors a job reports as one clear line (bad config, missing input, a failed gate)."""
from __future__ import annotations

from interest.config import ConfigError
from interest.etl.ingest import IngestError
from interest.etl.pipeline import SessionizeError
from interest.models.export import ModelNotFoundError
from interest.nightly import BackfillError
from interest.serving.pipeline import EmbedInputError
from interest.serving.publish import PublishGateError, TableFormatError
from interest.spark import DeltaNotAvailableError, JavaNotFoundError
from interest.storage import StorageError
from interest.training.distributed import DistributedTrainingError
from interest.training.run import TrainingInputError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, IngestError, SessionizeError, JavaNotFoundError, ModelNotFoundError,
    TrainingInputError, DistributedTrainingError, EmbedInputError, PublishGateError, BackfillError,
    StorageError, TableFormatError, DeltaNotAvailableError,
)
