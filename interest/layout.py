"""Every place one run date reads and writes, resolved once from ``paths`` and handed down.

A stage asks its ``Layout`` where things are instead of formatting ``paths`` itself, so the
folder scheme (``dt=`` partitions, report kinds, table locations) is written in this one module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from interest import storage
from interest.config import Config, PathsConfig


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
        seq, dt = self.paths.sequences, f"dt={self.date}"
        return SessionizePaths(
            train=f"{seq}/{dt}/train",
            infer=f"{seq}/{dt}/infer",
            vocab=f"{self.paths.vocab}/{dt}",
            rejects=f"{self.paths.rejects}/{dt}",
            sessions=f"{self.paths.sessions}/{dt}",
            day=f"{seq}/{dt}/day",
            summary=f"{self.paths.reports}/sessionize/{dt}/summary.json",
        )

    def report(self, kind: str, *parts: str) -> str:
        """A report folder of this date: ``reports/<kind>/[<parts>/]dt=<date>``."""
        return storage.join(storage.normalize(self.paths.reports), kind, *parts, f"dt={self.date}")

    def table(self, name: str) -> str:
        """A published table's location in the warehouse."""
        return f"{self.paths.warehouse}/{self.database}.db/{name}"
