"""Loading a profile: YAML plus ``--set key=value`` overrides, checked before any job starts.

Unknown keys and wrong types fail loudly with the dotted key that is wrong, because a silently
ignored typo in a nightly job is worse than a crash.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import dacite
import yaml

from interest.config import sections
from interest.config.sections import VALID_SEED, Config, ConfigError, GeneratorConfig

T = TypeVar("T")
GENERATOR = "generator"  # the profile section of the sample-data generator (GeneratorConfig)


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and out[key]:
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Set one override. A mapping merges into the mapping already there, so that
    ``spark.conf={spark.executor.memory: 8g}`` adds to the profile's Spark settings rather than
    dropping them (its shuffle partitions above all)."""
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
    old = node.get(parts[-1])
    node[parts[-1]] = _merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value


def parse_override(text: str) -> tuple[str, Any]:
    """``model.dim=64`` -> ("model.dim", 64); the value is read as YAML so types come through."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


def _int_to_float(value: Any) -> Any:
    """YAML writes 30 for 30.0; accept whole numbers where a float is expected."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _check_keys(cls: type, data: Any, prefix: str = "") -> None:
    """Reject keys that no dataclass field has, naming the full dotted key."""
    if not isinstance(data, dict):
        raise ConfigError(f"configuration key {prefix.rstrip('.')!r} must be a section (a mapping)")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                f"unknown configuration key {prefix + str(key)!r} (known in this section: {', '.join(sorted(fields))})"
            )
        ftype = cls.__annotations__.get(key) if hasattr(cls, "__annotations__") else None
        sub = vars(sections).get(ftype) if isinstance(ftype, str) else None
        if sub is not None and dataclasses.is_dataclass(sub):
            _check_keys(sub, value, f"{prefix}{key}.")  # type: ignore[arg-type]


def from_dict(data: dict[str, Any]) -> Config:
    """Build a Config, failing with the dotted key on an unknown key or a wrong type."""
    _check_keys(Config, data)
    return _build(Config, data)


def _build(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """A config dataclass from a dict whose keys were checked; a wrong type names its dotted key
    (``prefix``: the section's, for a section built alone)."""
    try:
        return dacite.from_dict(
            cls, data, config=dacite.Config(strict=True, check_types=True, type_hooks={float: _int_to_float})
        )
    except dacite.UnexpectedDataError as exc:
        keys = ", ".join(sorted(exc.keys))
        raise ConfigError(f"unknown configuration key(s): {keys}") from None
    except dacite.WrongTypeError as exc:
        key = f"{prefix}{exc.field_path}"
        if get_origin(exc.field_type) is Literal:
            raise ConfigError(
                f"configuration key {key!r} must be one of {list(get_args(exc.field_type))}, got {exc.value!r}"
            ) from None
        raise ConfigError(
            f"configuration key {key!r} has the wrong type: expected {_describe(exc.field_type)}, got {exc.value!r}"
        ) from None
    except dacite.DaciteError as exc:
        raise ConfigError(f"configuration error: {exc}") from None


def _describe(field_type: Any) -> str:
    """A field's type as a user reads it: ``bool or one of ['auto']``, ``int``."""
    if get_origin(field_type) is Literal:
        return f"one of {list(get_args(field_type))}"
    if get_args(field_type) and get_origin(field_type) in (Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in get_args(field_type))
    return getattr(field_type, "__name__", str(field_type))


def _read(path: str | os.PathLike | None, overrides: list[str] | None) -> dict[str, Any]:
    """A YAML profile (or nothing) as a dict, with ``key=value`` overrides applied in order."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"configuration file not found: {p}")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
        data = loaded
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(data, key, value)
    return data


def _generator(data: dict[str, Any]) -> GeneratorConfig:
    section = data.get(GENERATOR) or {}
    _check_keys(GeneratorConfig, section, f"{GENERATOR}.")
    return _build(GeneratorConfig, section, f"{GENERATOR}.")


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML profile (or the defaults) and apply ``key=value`` overrides in order. A
    ``generator`` section is checked and left out (it is the sample generator's)."""
    data = _read(path, overrides)
    _generator(data)
    data.pop(GENERATOR, None)
    cfg = from_dict(data)
    _check_values(cfg)
    return cfg


def load_generator_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> GeneratorConfig:
    """The ``generator`` section of a profile, with the ``generator.*`` overrides among ``overrides``
    (the others are for :func:`load_config`)."""
    return _generator(_read(path, [o for o in overrides or [] if o.startswith(f"{GENERATOR}.")]))


def _check_values(cfg: Config) -> None:
    """Value checks that types alone cannot express, each naming its key."""
    s = cfg.sessionize
    checks = [
        (s.max_len >= 4, "sessionize.max_len must be at least 4"),
        (s.max_windows >= 1, "sessionize.max_windows must be at least 1"),
        (s.session_gap_minutes > 0, "sessionize.session_gap_minutes must be positive"),
        (s.min_item_count >= 1, "sessionize.min_item_count must be at least 1"),
        (s.lookback_days >= 0, "sessionize.lookback_days must be 0 (everything) or more"),
        (
            len(s.event_types) == len(set(s.event_types)) and s.event_types,
            "sessionize.event_types must be a non-empty list without repeats",
        ),
        (
            s.row_group_mib > 0 and s.min_row_groups > 0,
            "sessionize.row_group_mib and min_row_groups must be positive",
        ),
        (cfg.model.dim % cfg.model.heads == 0, "model.dim must be divisible by model.heads"),
        (cfg.model.memory_slots >= 1, "model.memory_slots must be at least 1"),
        (0 <= cfg.model.filter_mix <= 1, "model.filter_mix must be within [0, 1]"),
        (
            cfg.model.filter_mix == 0 or cfg.model.encoder == "self_attention",
            "model.filter_mix applies to the self_attention encoder only",
        ),
        (cfg.train.batch_size > 0, "train.batch_size must be positive"),
        (cfg.train.contrastive_weight >= 0, "train.contrastive_weight must be 0 or more"),
        (cfg.train.contrastive_temperature > 0, "train.contrastive_temperature must be positive"),
        (cfg.train.workers >= 1, "train.workers must be at least 1"),
        (0 <= cfg.embed.min_coverage <= 1, "embed.min_coverage must be within [0, 1]"),
        (cfg.embed.diversity >= 0, "embed.diversity must be 0 or more"),
        (0 <= cfg.embed.interest_min_weight < 1, "embed.interest_min_weight must be within [0, 1)"),
        (0 < cfg.embed.interest_max_cosine <= 1, "embed.interest_max_cosine must be within (0, 1]"),
        (cfg.embed.because_items >= 0, "embed.because_items must be 0 or more"),
        (
            not cfg.embed.whole_history or cfg.model.encoder == "memory",
            "embed.whole_history applies to the memory encoder only (the others read the latest window)",
        ),
        (
            not cfg.embed.whole_history or s.max_windows > 1,
            "embed.whole_history reads the older windows sessionize stores: set sessionize.max_windows above 1",
        ),
        (
            VALID_SEED not in cfg.eval.seeds,
            f"eval.seeds {list(cfg.eval.seeds)} must leave out {VALID_SEED}, the validation draw's seed: "
            "validation would tune on a test draw",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
