"""Every place one run date reads and writes, resolved once from ``paths`` and handed down.

A stage asks its ``Layout`` where things are instead of formatting ``paths`` itself, so the
folder scheme (``dt=`` partitions, report kinds, table locations, checkpoints, locks, the
indexes and SavedModels beside a model) is written in this one module.
``tests/test_architecture.py`` fails on a dated path built anywhere else.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

from interest import storage
from interest.config import Config, PathsConfig

INDEX_FOLDER = "_index"  # beside the model versions: shipping a model never carries its indexes
EXPORT_FOLDER = "_serving"  # the TensorFlow Serving exports, beside the model versions


def partition(date: str) -> str:
    """The folder name of one date: ``dt=<date>`` (every dated path is built with it)."""
    return f"dt={date}"


def partition_dir(location: str, date: str, *under: str) -> str:
    """``<location>[/<under>...]/dt=<date>``: a table's (or a staging area's) folder of one date."""
    return "/".join([location.rstrip("/"), *under, partition(date)])


def lock_file(root: str, what: str, date: str) -> str:
    """``<root>/_locks/<what>/dt=<date>.lock``: the lock of one stage and date."""
    return storage.join(storage.normalize(root), "_locks", what, f"{partition(date)}.lock")


def index_root(model_dir: str) -> str:
    """``<encoder>/_index``: the indexes of every version of the model's encoder."""
    return storage.join(storage.parent(storage.normalize(model_dir).rstrip("/")), INDEX_FOLDER)


def index_dir(model_dir: str, date: str) -> str:
    """``<encoder>/_index/<version>/dt=<date>``: the index of ``date``'s items, built from the
    version ``model_dir``."""
    return storage.join(index_root(model_dir), storage.name(storage.normalize(model_dir).rstrip("/")), partition(date))


def serving_number(version: str, date: str) -> int:
    """The TensorFlow Serving version of a model folder on the night ``date``: days of the
    date, then the milliseconds of the UTC stamp in its name (``models.export.new_version``; a
    folder named otherwise: the time of the export); fits an int64."""
    days = (dt.date.fromisoformat(date) - dt.date(1970, 1, 1)).days
    try:
        made = dt.datetime.strptime(version.split("_")[1], "%Y%m%dT%H%M%S%f").replace(tzinfo=dt.timezone.utc)
    except (IndexError, ValueError):
        made = dt.datetime.now(dt.timezone.utc)
    return days * 10**13 + int(made.timestamp() * 1000)


def serving_date(number: int) -> str:
    """The night of a TensorFlow Serving version (:func:`serving_number`)."""
    return (dt.date(1970, 1, 1) + dt.timedelta(days=number // 10**13)).isoformat()


def exports_root(model_dir: str) -> str:
    """``<encoder>/_serving``: the folder TensorFlow Serving watches."""
    return storage.join(storage.parent(model_dir), EXPORT_FOLDER)


def serving_dir(model_dir: str, date: str) -> str:
    """``<encoder>/_serving/<n>``: the SavedModel of the version ``model_dir`` on the night ``date``."""
    return storage.join(exports_root(model_dir), str(serving_number(storage.name(model_dir), date)))


@dataclass(frozen=True)
class SessionizePaths:
    """Where one run date's sessionize outputs live."""

    train: str
    infer: str
    vocab: str
    rejects: str
    sessions: str
    day: str  # each user's steps on the date itself (tomorrow's truth for yesterday's recommendations)
    summary: str


@dataclass(frozen=True)
class Layout:
    """The run date, the table database, the raw-event source and every ``paths.*`` location
    made absolute (URLs kept as they are)."""

    date: str
    database: str
    source: str  # the raw events: ingest.path when set, else {root}/raw/events
    paths: PathsConfig  # every field resolved: ``{root}`` substituted, local paths absolute

    @classmethod
    def of(cls, cfg: Config, date: str) -> Layout:
        p = cfg.paths
        resolved = PathsConfig(**{f.name: p.resolve(f.name) for f in dataclasses.fields(PathsConfig)})
        return cls(date, cfg.embed.database, cfg.ingest.path or resolved.raw_events, resolved)

    def at(self, date: str) -> Layout:
        """The same places for another date (the previous night's inputs, the model's data date)."""
        return dataclasses.replace(self, date=date)

    @property
    def sessionized(self) -> SessionizePaths:
        seq, day = self.paths.sequences, partition(self.date)
        return SessionizePaths(
            train=f"{seq}/{day}/train",
            infer=f"{seq}/{day}/infer",
            vocab=f"{self.paths.vocab}/{day}",
            rejects=f"{self.paths.rejects}/{day}",
            sessions=f"{self.paths.sessions}/{day}",
            day=f"{seq}/{day}/day",
            summary=f"{self.paths.reports}/sessionize/{day}/summary.json",
        )

    def report(self, kind: str, *parts: str) -> str:
        """A report folder of this date: ``reports/<kind>/[<parts>/]dt=<date>``."""
        return storage.join(storage.normalize(self.paths.reports), kind, *parts, partition(self.date))

    def checkpoints(self, encoder: str, key: str) -> str:
        """``checkpoints/<encoder>/dt=<date>/<key>``: a training run's checkpoints (``key``: what
        the run trains, so another setting never resumes them)."""
        return storage.join(storage.normalize(self.paths.checkpoints), encoder, partition(self.date), key)

    def index(self, model_dir: str) -> str:
        """The item index this date's embed stage builds from ``model_dir``."""
        return index_dir(model_dir, self.date)

    def saved_model(self, model_dir: str) -> str:
        """The SavedModel this date's embed stage exports from ``model_dir``."""
        return serving_dir(model_dir, self.date)

    def table(self, name: str) -> str:
        """A published table's location in the warehouse."""
        return f"{self.paths.warehouse}/{self.database}.db/{name}"
