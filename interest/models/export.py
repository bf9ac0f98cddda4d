"""The exported model folder: everything the embedding job needs, nothing of the trainer's state.

    models/<encoder>/<version>/
        encoder.json          kind + constructor arguments (rebuilds the network)
        encoder.weights.h5    the weights
        vocab.parquet         item_idx <-> item_id (+ category, count) the model was trained with
        config.json           the run's full configuration and data spec
        metrics.json          training history, validation/test metrics, timings, workers
    models/<encoder>/LATEST   the version trained on the newest data (written last)

Versions are written to a staging folder and renamed into place, so a reader never sees a
half-written model, and LATEST moves only after the folder is complete. Every version records the
date of the data it was trained on (``config.json``). Lineage follows those dates, not the wall
clock: LATEST only ever moves forward in data date (a backfill of an older date leaves it alone),
and the model a run for date D builds on is the newest one trained on data before D.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interest import storage
from interest.errors import UserError
from interest.models.cold import cold_item_rows
from interest.models.encoders import Encoder, build_encoder


class ModelDamagedError(UserError, ValueError):
    """A model folder exists but a file in it cannot be read (cut short, corrupt or missing)."""


class ModelNotFoundError(UserError, FileNotFoundError):
    """No exported model where one was expected."""


def new_version(date: str | None = None) -> str:
    # to the microsecond: versions of one date sort by name in the order they were made
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    return f"{date or 'adhoc'}_{stamp}_{uuid.uuid4().hex[:6]}"


def _base(models_root: str, encoder: str) -> str:
    """``<models root>/<encoder>``: a local path for local roots (file:// included), else a URL."""
    root = storage.normalize(models_root)
    return storage.join(root, encoder)


def save_model(
    encoder: Encoder,
    vocab: pd.DataFrame,
    config: dict[str, Any],
    metrics: dict[str, Any],
    models_root: str,
    version: str,
) -> str:
    """Write a model version atomically and move LATEST forward to it; returns its folder.

    The files are made in a local scratch folder (Keras writes local files only), copied to a
    hidden staging folder beside the final one and renamed into place.
    """
    root = _base(models_root, encoder.kind)
    final, staging = storage.join(root, version), storage.join(root, f"_staging-{version}")
    with storage.scratch("interest-export-") as local:
        with open(os.path.join(local, "encoder.json"), "w") as f:
            json.dump({"kind": encoder.kind, "args": encoder.args}, f, indent=2)
        encoder.save_weights(os.path.join(local, "encoder.weights.h5"))
        vocab.to_parquet(os.path.join(local, "vocab.parquet"), index=False)
        with open(os.path.join(local, "config.json"), "w") as f:
            json.dump(config, f, indent=2, default=str)
        with open(os.path.join(local, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2, default=_json_default)
        try:
            storage.upload(local, staging)
            storage.rename(staging, final)
        except BaseException:
            storage.delete(staging)
            raise
    current = _latest_date(root)
    if current is None or str(config.get("date") or "") >= current:
        storage.write_text(storage.join(root, "LATEST"), version + "\n")
    return final


def _latest_date(root: str) -> str | None:
    """The data date of the version LATEST names (None without LATEST)."""
    latest = storage.join(root, "LATEST")
    if not storage.is_file(latest):
        return None
    return _data_date(storage.join(root, storage.read_text(latest).strip())) or ""


def _data_date(folder: str) -> str | None:
    config = storage.join(folder, "config.json")
    return json.loads(storage.read_text(config)).get("date") if storage.is_file(config) else None


def model_versions(models_root: str, encoder: str) -> list[tuple[str, str]]:
    """(data date, folder) of every complete version of ``encoder``, oldest data first; versions
    of one date in the order they were made (the name starts with the date and a UTC stamp)."""
    base = _base(models_root, encoder)
    found = []
    for version in storage.list_dirs(base):
        folder = storage.join(base, version)
        if version.startswith("_") or not storage.is_file(storage.join(folder, "encoder.json")):
            continue
        date = _data_date(folder)
        if date:
            found.append((date, version, folder))
    return [(date, folder) for date, _, folder in sorted(found)]


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def resolve_model_dir(path_or_root: str, encoder: str | None = None) -> str:
    """A model folder, or the LATEST version under ``<models root>/<encoder>``."""
    path = storage.normalize(path_or_root)
    if storage.is_file(storage.join(path, "encoder.json")):
        return path
    base = storage.join(path, encoder) if encoder else path
    latest = storage.join(base, "LATEST")
    if storage.is_file(latest):
        return storage.join(base, storage.read_text(latest).strip())
    raise ModelNotFoundError(
        f"no exported model at {path_or_root}"
        + (f" for encoder {encoder!r}" if encoder else "")
        + " (train one with jobs/train.py)"
    )


def find_model_for_date(models_root: str, encoder: str, date: str) -> str | None:
    """The newest exported version of ``encoder`` trained on ``date``'s data, if any."""
    found = [path for d, path in model_versions(models_root, encoder) if d == date]
    return found[-1] if found else None


def find_model_before(models_root: str, encoder: str, date: str) -> str | None:
    """The model a run for ``date`` builds on: the newest version trained on data before
    ``date`` (never one trained on later data, whatever order dates are run in)."""
    found = [path for d, path in model_versions(models_root, encoder) if d < date]
    return found[-1] if found else None


def model_as_of(models_root: str, encoder: str, date: str) -> str:
    """The model that serves ``date``: the one trained on its data, else the newest before it."""
    found = find_model_for_date(models_root, encoder, date) or find_model_before(models_root, encoder, date)
    if found is None:
        raise ModelNotFoundError(
            f"no {encoder} model trained on data up to {date} under {models_root} (train one with jobs/train.py)"
        )
    return found


def warm_start(new: Encoder, old: Encoder, vocab: pd.DataFrame | None = None) -> list[str]:
    """Copy ``old``'s weights into ``new`` (same architecture, possibly a bigger vocabulary).

    Tables that grew (the item table when new items arrived) get their old rows copied, so an
    item keeps its learned vector. New items start from their category's mean vector (or the
    popularity prior) when ``vocab`` (the new vocabulary) is given, else from the fresh
    initialisation. Returns the names of the weights that were only partly copied.
    """
    if new.kind != old.kind or len(new.weights) != len(old.weights):
        raise ValueError(
            f"cannot warm start a {new.kind} encoder from a {old.kind} with a different "
            "architecture; train from scratch (nightly.warm_start: false)"
        )
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
        if vocab is not None and target.path == new.item_table.path and len(value) > rows:
            value[rows:] = cold_item_rows(old_value, vocab, len(value))
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
        return storage.name(self.path)


def load_model(path: str) -> LoadedModel:
    """Rebuild the encoder from its JSON and load the weights (no training code involved).

    A remote folder is copied to local scratch first: Keras reads local files only.
    """
    path = storage.normalize(path)
    if not storage.is_file(storage.join(path, "encoder.json")):
        raise ModelNotFoundError(f"{path} is not an exported model folder (no encoder.json)")
    with storage.local_copy(path) as local:
        folder = Path(local)
        part = "encoder.json"
        try:  # a half-copied or damaged folder is named with the file that broke, not a Keras trace
            meta = json.loads((folder / part).read_text())
            encoder = build_encoder(meta["kind"], **meta["args"])
            part = "encoder.weights.h5"
            encoder.load_weights(str(folder / part))
            part = "vocab.parquet"
            vocab = pd.read_parquet(folder / part)
            part = "config.json"
            config = json.loads((folder / part).read_text())
            part = "metrics.json"
            metrics = json.loads((folder / part).read_text())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise ModelDamagedError(
                f"model {path} is damaged: {part}: {reason}; train the date again or use another version"
            ) from None
        return LoadedModel(encoder=encoder, vocab=vocab, config=config, metrics=metrics, path=path)
