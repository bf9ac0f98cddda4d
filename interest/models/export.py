"""The exported model folder: everything the embedding job needs, nothing of the trainer's state.

    models/<encoder>/<version>/
        encoder.json          kind + constructor arguments (rebuilds the network)
        encoder.weights.h5    the weights
        vocab.parquet         item_idx <-> item_id (+ category, count) the model was trained with
        config.json           the run's full configuration and data spec
        metrics.json          training history, validation/test metrics, timings, workers
    models/<encoder>/LATEST   the newest version's name (written last)

Versions are written to a staging folder and renamed into place, so a reader never sees a
half-written model, and LATEST moves only after the folder is complete.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interest.data.reader import local_path
from interest.models.encoders import Encoder, build_encoder


class ModelNotFoundError(FileNotFoundError):
    """No exported model where one was expected."""


def new_version(date: str | None = None) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{date or 'adhoc'}_{stamp}_{uuid.uuid4().hex[:6]}"


def save_model(encoder: Encoder, vocab: pd.DataFrame, config: dict[str, Any],
               metrics: dict[str, Any], models_root: str, version: str) -> str:
    """Write a model version atomically and point LATEST at it; returns its folder."""
    root = Path(local_path(models_root)) / encoder.kind
    final = root / version
    staging = root / f"_staging-{version}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        (staging / "encoder.json").write_text(json.dumps({"kind": encoder.kind, "args": encoder.args},
                                                         indent=2))
        encoder.save_weights(str(staging / "encoder.weights.h5"))
        vocab.to_parquet(staging / "vocab.parquet", index=False)
        (staging / "config.json").write_text(json.dumps(config, indent=2, default=str))
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    tmp = root / f".LATEST-{uuid.uuid4().hex[:6]}"
    tmp.write_text(version + "\n")
    os.replace(tmp, root / "LATEST")
    return str(final)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def resolve_model_dir(path_or_root: str, encoder: str | None = None) -> str:
    """A model folder, or the LATEST version under ``<models root>/<encoder>``."""
    path = Path(local_path(path_or_root))
    if (path / "encoder.json").is_file():
        return str(path)
    base = path / encoder if encoder else path
    latest = base / "LATEST"
    if latest.is_file():
        return str(base / latest.read_text().strip())
    raise ModelNotFoundError(f"no exported model at {path_or_root}"
                             + (f" for encoder {encoder!r}" if encoder else "")
                             + " (train one with jobs/train.py)")


def find_model_for_date(models_root: str, encoder: str, date: str) -> str | None:
    """The newest exported version of ``encoder`` trained on ``date``'s data, if any."""
    base = Path(local_path(models_root)) / encoder
    if not base.is_dir():
        return None
    found = [p for p in base.iterdir() if p.is_dir() and not p.name.startswith("_")
             and (p / "config.json").is_file()
             and json.loads((p / "config.json").read_text()).get("date") == date]
    return str(max(found, key=lambda p: p.name)) if found else None


def warm_start(new: Encoder, old: Encoder) -> list[str]:
    """Copy ``old``'s weights into ``new`` (same architecture, possibly a bigger vocabulary).

    Tables that grew (the item table when new items arrived) get their old rows copied and keep
    the fresh initialisation for the new rows, so an item keeps its learned vector. Returns the
    names of the weights that were only partly copied.
    """
    if new.kind != old.kind or len(new.weights) != len(old.weights):
        raise ValueError(f"cannot warm start a {new.kind} encoder from a {old.kind} with a different "
                         "architecture; train from scratch (unset train.init_from)")
    partial = []
    for target, source in zip(new.weights, old.weights):
        value, old_value = np.array(target.numpy()), source.numpy()
        if value.shape == old_value.shape:
            target.assign(old_value)
            continue
        if value.ndim != old_value.ndim or value.shape[1:] != old_value.shape[1:]:
            raise ValueError(f"cannot warm start {target.path}: {old_value.shape} -> {value.shape}")
        rows = min(len(value), len(old_value))
        value[:rows] = old_value[:rows]
        target.assign(value)
        partial.append(target.path)
    return partial


@dataclass
class LoadedModel:
    encoder: Encoder
    vocab: pd.DataFrame
    config: dict[str, Any]
    metrics: dict[str, Any]
    path: str

    @property
    def version(self) -> str:
        return Path(self.path).name


def load_model(path: str) -> LoadedModel:
    """Rebuild the encoder from its JSON and load the weights (no training code involved)."""
    folder = Path(local_path(path))
    if not (folder / "encoder.json").is_file():
        raise ModelNotFoundError(f"{path} is not an exported model folder (no encoder.json)")
    meta = json.loads((folder / "encoder.json").read_text())
    encoder = build_encoder(meta["kind"], **meta["args"])
    encoder.load_weights(str(folder / "encoder.weights.h5"))
    return LoadedModel(
        encoder=encoder,
        vocab=pd.read_parquet(folder / "vocab.parquet"),
        config=json.loads((folder / "config.json").read_text()),
        metrics=json.loads((folder / "metrics.json").read_text()),
        path=str(folder),
    )
