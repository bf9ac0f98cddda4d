"""Typed configuration: dataclasses loaded from ``conf/*.yaml`` plus ``--set key=value`` overrides.

One config object travels through every job, so a profile (``conf/local.yaml``,
``conf/cluster.yaml``) fully describes a run. ``sections`` declares what can be set (and documents
it), ``load`` reads and checks a profile, ``reference`` writes docs/configuration.md.
"""

from interest.config.load import GENERATOR, from_dict, load_config, load_generator_config, parse_override
from interest.config.reference import reference, reference_rows
from interest.config.sections import (
    MAX_FUTURE_SKEW_MINUTES,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    SAMPLED_NEGATIVES,
    VALID_SEED,
    Config,
    ConfigError,
    EmbedConfig,
    EvalConfig,
    GeneratorConfig,
    IngestConfig,
    ModelConfig,
    NightlyConfig,
    PathsConfig,
    QualityConfig,
    SessionizeConfig,
    SparkConfig,
    StorageConfig,
    TrackingConfig,
    TrainConfig,
    absolute,
)

__all__ = [
    "GENERATOR",
    "MAX_FUTURE_SKEW_MINUTES",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "SAMPLED_NEGATIVES",
    "VALID_SEED",
    "Config",
    "ConfigError",
    "EmbedConfig",
    "EvalConfig",
    "GeneratorConfig",
    "IngestConfig",
    "ModelConfig",
    "NightlyConfig",
    "PathsConfig",
    "QualityConfig",
    "SessionizeConfig",
    "SparkConfig",
    "StorageConfig",
    "TrackingConfig",
    "TrainConfig",
    "absolute",
    "from_dict",
    "load_config",
    "load_generator_config",
    "parse_override",
    "reference",
    "reference_rows",
]
