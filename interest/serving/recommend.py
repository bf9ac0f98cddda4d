"""Recommendations at request time: a user's events up to now -> interests as they are now, the
nearest new items from the night's index, and what the model attended to.

The nightly table holds yesterday's interests. A user who changed course this morning needs their
events encoded now, by the same model and the same rules: this module builds the user's steps with
the sessionize stage's own step builder (``etl.sessions``: sessions, merged repeats, time-gap
buckets), their sequence row as ``etl.sequences`` lays it out, and embeds and explains it with the
embed stage's own batch function (``inference.embed_batch``). For events that the night saw, the
result is that night's row; the recommendations come from the night's index (``serving.index``)
through the same top-N rule, the items the user has seen left out. A user without events gets the
nightly's fallback: the popularity prior and the most popular items.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from interest import rows, storage
from interest.config import Config
from interest.data.files import read_vocab
from interest.errors import UserError
from interest.etl import sessions
from interest.etl.sequences import STEP_COLUMNS, sequences_of_users
from interest.etl.sessionize import clean_rules, step_rules
from interest.layout import Layout
from interest.models.export import LoadedModel, load_model, model_as_of
from interest.models.retrieval import Retrieval
from interest.schema import MIN_TRAIN_STEPS, SEQUENCE_FEATURES, UNKNOWN
from interest.serving import inference
from interest.serving.index import ItemIndex


class RecommendInputError(UserError, ValueError):
    """The request's events cannot be read as a history (a missing column, an unknown event type)."""


@dataclass(frozen=True)
class Recommendation:
    """One user's answer: the embedding, the items, the explanation, and how it was reached."""

    user_id: str
    embedding: np.ndarray  # [D], L2-normalised (the table's ``embedding``)
    items: list[tuple[str, float]]  # new items, best first, with their scores
    explanation: list[tuple[str, float]]  # the history items the attention weighted most
    is_cold_start: bool  # fewer than embed.cold_start_min_steps steps, or no events (fallback)
    steps: int
    unknown_items: list[str] = field(default_factory=list)  # history items the model does not know
    model_version: str = ""
    rejected: dict[str, int] = field(default_factory=dict)  # events the nightly would quarantine, by reason
    # per item of ``items``: (item, the interest that retrieved it, the history items behind it);
    # empty for the fallback
    reasons: list[tuple[str, int, list[str]]] = field(default_factory=list)


class Recommender:
    """The model of a date, that date's vocabulary and the index built from them."""

    def __init__(self, cfg: Config, model: LoadedModel, vocab: pd.DataFrame, index: ItemIndex):
        self.cfg, self.model, self.vocab, self.index = cfg, model, vocab, index
        self.item_ids = inference.item_ids_by_index(model, vocab)  # [V]
        self.lookup = dict(zip(vocab["item_id"].astype(str), vocab["item_idx"].astype(int)))
        self.rules = step_rules(cfg.sessionize)  # the nightly's, from the same config
        self.clean = clean_rules(cfg.sessionize)
        e = cfg.embed
        table = inference.scoring_table(model, vocab)  # [V, D] what the index was built from
        self.embedder = inference.Embedder(
            model=model,
            item_ids=self.item_ids,
            categories=inference.item_categories(vocab, len(self.item_ids)),
            top_k=e.top_items,
            top_n=0,  # set per request
            cold_min_steps=e.cold_start_min_steps,
            version=model.version,
            table=table,
            index=index,
            retrieval=Retrieval.of(e),
            windows=inference.history_windows(cfg),
        )

    @classmethod
    def load(cls, cfg: Config, date: str) -> Recommender:
        """The model as of ``date`` (the one its nightly published with), the date's vocabulary and
        the index that night built."""
        layout = Layout.of(cfg, date)
        model_dir = model_as_of(layout.paths.models, cfg.model.encoder, date)
        index = ItemIndex.load(layout.index(model_dir))
        vocab_dir = layout.sessionized.vocab
        if not storage.exists(vocab_dir):
            raise RecommendInputError(f"no vocabulary for {date} at {vocab_dir}: run the nightly of {date} first")
        vocab = read_vocab(vocab_dir)
        return cls(cfg, load_model(model_dir), vocab, index)

    def row(self, user_id: str, steps: pd.DataFrame) -> tuple[pa.RecordBatch, list[str]]:
        """The user's inference row from their steps (:func:`user_steps`), laid out by the
        nightly's own ``etl.sequences.sequences_of_users`` (with ``embed.whole_history``, its older
        windows too, as ``etl.sequences.with_older_windows`` joins them), and the item ids it does
        not know."""
        windows = self.embedder.windows
        stored, idx = windows_of_steps(user_id, steps, self.lookup, int(self.model.encoder.args["max_len"]), windows)
        unknown = sorted(set(steps["item_id"][idx == UNKNOWN]))
        latest = stored.filter(pc.equal(stored.column("window"), 0))
        columns = ["user_id", *SEQUENCE_FEATURES, "n_events", "n_steps", "history_idx"]
        batch = latest.select(columns).to_batches()[0]
        if windows > 1:
            older = stored.filter(pc.greater(stored.column("window"), 0)).select(["window", *SEQUENCE_FEATURES])
            structs = pa.StructArray.from_arrays([c.combine_chunks() for c in older.columns], names=older.column_names)
            column = pa.ListArray.from_arrays(pa.array([0, len(older)], pa.int32()), structs)
            batch = pa.RecordBatch.from_arrays([*batch.columns, column], names=[*batch.schema.names, "older"])
        return batch, unknown

    def recommend(self, user_id: str, events: pd.DataFrame, k: int = 10) -> Recommendation:
        """Encode the user's events now, then the ``k`` best items they have not seen from the index.

        Events the nightly would quarantine are left out and counted in ``rejected``; a user with
        none left gets the nightly's fallback."""
        version = self.model.version
        s = self.cfg.sessionize
        kept, rejected = rows.clean_events(read_events(events), s.event_types, self.cfg.ingest.ts_format)
        steps, bots = user_steps(user_id, kept, s.event_types, self.rules, self.clean) if len(kept) else (kept, {})
        rejected = {**rejected, **bots}
        if not len(steps):  # nothing valid, or a bot's events only
            return dataclasses.replace(self._fallback(user_id, k), rejected=rejected)
        batch, unknown = self.row(user_id, steps)
        # the nightly's batch function, its top-N answered by the night's index
        embedder = dataclasses.replace(self.embedder, top_n=k)
        out = inference.embed_batch(batch, embedder).to_pylist()[0]  # [1] row of EMBED_SCHEMA
        embedding = np.asarray(out["embedding"], np.float32)  # [D]
        items = [(r["item_id"], float(r["score"])) for r in out["recommendations"]]
        explanation = [(t["item_id"], float(t["weight"])) for t in out["top_items"]]
        reasons = [(r["item_id"], int(r["interest"]), list(r["because"])) for r in out["reasons"]]
        n_steps = int(batch.column("n_steps")[0].as_py())
        return Recommendation(
            user_id,
            embedding,
            items,
            explanation,
            bool(out["is_cold_start"]),
            n_steps,
            unknown,
            version,
            rejected,
            reasons,
        )

    def _fallback(self, user_id: str, k: int) -> Recommendation:
        """No events: the popularity prior and the most popular items, as the nightly gives known
        users without events (``embed.users_table``)."""
        prior = inference.popularity_prior(self.model, self.vocab)  # [D]
        items = inference.popular_items(self.model, self.vocab, k)
        return Recommendation(user_id, prior, items, [], True, 0, [], self.model.version)


def user_steps(
    user_id: str,
    events: pd.DataFrame,
    event_types: list[str],
    rules: sessions.StepRules,
    clean: sessions.CleanRules,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """One user's events as the nightly keeps them (``rows.clean_events``: ``item_id``,
    ``event_type``, ``ts`` as UTC datetimes; in arrival order) -> their steps by the nightly's
    rules, and the events rejected as a bot's by reason. Ordered by time (ties in arrival order),
    then ``etl.sessions.clean_users`` (exact repeats count once, the bot rule) and
    ``etl.sessions.steps_of_users``, the nightly's own functions."""
    ev = events.assign(
        event_rank=events["event_type"].map({t: i for i, t in enumerate(event_types)}).astype("int32"),
        arrival=np.arange(len(events)),
    ).sort_values(["ts", "arrival", "event_rank"], kind="stable")  # sessions.ORDER
    table = pa.table(
        {
            "user_id": pa.array([user_id] * len(ev), pa.string()),
            "ts": pa.array(ev["ts"].dt.tz_localize(None).to_numpy("datetime64[us]"), pa.timestamp("us")),
            "item_id": pa.array(ev["item_id"].to_numpy(), pa.string()),
            "event_type": pa.array(ev["event_type"].to_numpy(), pa.string()),
            "event_rank": pa.array(ev["event_rank"].to_numpy(), pa.int32()),
            "category": pa.nulls(len(ev), pa.string()),
        }
    )
    cleaned = sessions.clean_users(table, clean)
    reasons = cleaned.column("reject_reason").to_pandas()
    bots = {str(k): int(v) for k, v in reasons.value_counts().items()}
    kept = cleaned.filter(pc.is_null(cleaned.column("reject_reason")))
    steps = sessions.steps_of_users(kept.select(["user_id", "ts", "item_id", "event_rank", "category"]), rules)
    return steps.to_pandas(), bots


def read_events(events: pd.DataFrame) -> pd.DataFrame:
    """A request's events with the columns request time reads, or a clear error."""
    missing = {"item_id", "event_type", "ts"} - set(events.columns)
    if missing:
        raise RecommendInputError(f"events need the columns item_id, event_type and ts; missing {sorted(missing)}")
    return events


def windows_of_steps(
    user_id: str, steps: pd.DataFrame, lookup: dict[str, int], max_len: int, windows: int = 1
) -> tuple[pa.Table, np.ndarray]:
    """One user's steps -> their rows as the nightly stores them (``etl.sequences``: window 0 the
    latest ``max_len`` steps, left-padded, then up to ``windows - 1`` older ones), and every step's
    item index (unknown ids: the unknown index)."""
    idx = np.array([lookup.get(i, UNKNOWN) for i in steps["item_id"]], np.int32)
    table = pa.Table.from_pandas(steps.assign(user_id=user_id, item_idx=idx)[STEP_COLUMNS], preserve_index=False)
    return sequences_of_users(table, max_len, MIN_TRAIN_STEPS, windows), idx
