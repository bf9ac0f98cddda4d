"""An encoder exported for TensorFlow Serving: raw events in, embedding, new items and explanation out.

A serving client has a user's recent raw events, not our sequence rows. The exported graph does
what the sessionize and embed stages do for one user, in TensorFlow only, so a process that has
never imported ``interest`` (a TensorFlow Serving container, a Python service with just
TensorFlow) gets the nightly's answer:

1. events: drop padding ("") and event types the run does not know (the nightly quarantines them),
   drop exact repeats (same item, type and time), order by time (ties in arrival order);
2. steps, by the nightly's rules (``etl.sessions.steps_of_users``): a session starts after a gap
   of ``gap_minutes`` and is cut every ``max_events`` events and ``max_minutes``; consecutive
   events on one item within a session merge into one step, with the latest funnel stage among
   them; each step's time-gap bucket comes from the time since the previous step;
3. the latest ``max_len`` steps, left-padded as ``etl.sequences`` lays them out, item ids looked
   up in the model's vocabulary inside the graph (unknown ids -> the unknown index);
4. the encoder; the L2-normalised user vector; the ``top_n`` best items the user has not
   interacted with (dot products with the item table, as the embed stage scores them); the
   ``top_items`` history items with the largest summed attention (the explanation).

Layout: ``<models>/<encoder>/_serving/<n>/saved_model.pb`` with ``n`` increasing with the data
date, then the time the model was made (as ``LATEST`` moves), so TensorFlow Serving's default
policy (the highest ``n``) serves the newest model; ``<n>/assets.extra/model_version`` names the
model folder it came from.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from interest import storage
from interest.models.encoders import Encoder
from interest.schema import FIRST_ITEM, PAD, SEQUENCE_FEATURES, UNKNOWN

SIGNATURE = "serving_default"
EXPORT_FOLDER = "_serving"  # beside the model versions: shipping a model never carries it


@dataclass(frozen=True)
class ServingRules:
    """What the graph needs beside the model: the run's step rules and output sizes."""

    event_types: tuple[str, ...]  # funnel order: an event's rank is its position
    gap_minutes: float
    max_events: int
    max_minutes: float
    edges_s: tuple[float, ...]
    top_n: int  # recommended items per user
    top_items: int  # history items in the explanation
    cold_start_min_steps: int


def serving_number(version: str, data_date: str) -> int:
    """The TensorFlow Serving version of a model folder: days of its data date, then the
    milliseconds of the UTC stamp in its name (``models.export.new_version``; a folder named
    otherwise: the time of the export); fits an int64."""
    days = (dt.date.fromisoformat(data_date) - dt.date(1970, 1, 1)).days
    try:
        made = dt.datetime.strptime(version.split("_")[1], "%Y%m%dT%H%M%S%f").replace(tzinfo=dt.timezone.utc)
    except (IndexError, ValueError):
        made = dt.datetime.now(dt.timezone.utc)
    return days * 10**13 + int(made.timestamp() * 1000)


def serving_dir(model_dir: str, data_date: str) -> str:
    """``<models>/<encoder>/_serving/<n>``: where the SavedModel of the version ``model_dir`` goes."""
    version = storage.name(model_dir)
    return storage.join(storage.parent(model_dir), EXPORT_FOLDER, str(serving_number(version, data_date)))


def _cummax_index(flags: tf.Tensor) -> tf.Tensor:
    """[B, L] bool -> [B, L] int32: the last position j <= i where ``flags`` holds (0 if none)."""
    n = tf.shape(flags)[1]
    j = tf.range(n)
    upto = j[None, :] <= j[:, None]  # [L(i), L(j)]
    hits = flags[:, None, :] & upto[None]  # [B, L, L]
    return tf.reduce_max(tf.where(hits, j[None, None, :], 0), axis=2)


class ServingModule(tf.Module):
    """The encoder and its lookups behind one ``serve`` function (the serving signature)."""

    def __init__(self, encoder: Encoder, item_ids: np.ndarray, rules: ServingRules, version: str):
        super().__init__()
        self.encoder, self.rules, self.max_len = encoder, rules, int(encoder.args["max_len"])
        real = np.arange(FIRST_ITEM, len(item_ids))
        self.items = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(item_ids[real].astype(str)), tf.constant(real, tf.int64)),
            default_value=UNKNOWN,
        )
        self.types = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(rules.event_types)), tf.range(len(rules.event_types), dtype=tf.int64)
            ),
            default_value=-1,
        )
        self.ids = tf.constant(item_ids.astype(str))  # [V]: index -> item id
        self.version = tf.constant(version)

    def steps(self, item_id: tf.Tensor, event_type: tf.Tensor, ts: tf.Tensor) -> dict[str, tf.Tensor]:
        """Raw events [B, E] -> the sequence features [B, L] (left-padded), the seen items [B, E]
        and the counts [B]; see the module docstring for the rules."""
        r = self.rules
        rank = tf.cast(self.types.lookup(event_type), tf.int32)  # [B, E], -1: unknown type
        valid = (item_id != "") & (rank >= 0)
        e = tf.shape(item_id)[1]
        j = tf.range(e)
        earlier = j[None, :] < j[:, None]  # [E(i), E(j)]
        same = (
            (ts[:, :, None] == ts[:, None, :])
            & (item_id[:, :, None] == item_id[:, None, :])
            & (rank[:, :, None] == rank[:, None, :])
        )
        repeat = tf.reduce_any(same & earlier[None] & valid[:, None, :], axis=2)  # [B, E]
        valid &= ~repeat
        order = tf.argsort(tf.where(valid, ts, np.inf), axis=1, stable=True)  # valid first, by time
        item_id, rank, ts, valid = (tf.gather(x, order, batch_dims=1) for x in (item_id, rank, ts, valid))
        idx = tf.where(valid, self.items.lookup(item_id), PAD)  # [B, E] int64
        n_events = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)  # [B]

        first = j[None, :] == 0
        gap = ts - tf.concat([ts[:, :1], ts[:, :-1]], axis=1)  # [B, E] seconds since the previous event
        base = _cummax_index(first | (gap >= r.gap_minutes * 60))  # [B, E] the session's first event
        pos = j[None, :] - base
        chunk = tf.floor((ts - tf.gather(ts, base, batch_dims=1)) / (r.max_minutes * 60))
        cut = first | (pos % r.max_events == 0) | (chunk != tf.concat([chunk[:, :1], chunk[:, :-1]], axis=1))
        session = tf.cumsum(tf.cast(cut, tf.int32), axis=1)  # [B, E] from 1
        new_item = item_id != tf.concat([item_id[:, :1], item_id[:, :-1]], axis=1)
        starts = (cut | new_item) & valid  # [B, E] an event that begins a step
        step = tf.cumsum(tf.cast(starts, tf.int32), axis=1) - 1  # [B, E] its step
        n_steps = tf.reduce_sum(tf.cast(starts, tf.int32), axis=1)  # [B]
        in_step = (step[:, :, None] == step[:, None, :]) & valid[:, None, :]  # [B, E, E]
        stage = tf.reduce_max(tf.where(in_step, rank[:, None, :], -1), axis=2)  # the run's latest stage
        # the previous step's start: the last start strictly before this event (none: bucket 1)
        after_start = tf.concat([tf.zeros_like(starts[:, :1]), starts[:, :-1]], axis=1)  # [B, E]
        has_prev = tf.cumsum(tf.cast(after_start, tf.int32), axis=1) > 0
        prev = tf.maximum(_cummax_index(after_start) - 1, 0)
        step_gap = ts - tf.gather(ts, prev, batch_dims=1)  # [B, E]
        edges = tf.constant(r.edges_s, tf.float64)
        above = tf.reduce_sum(tf.cast(edges[None, None, :] < step_gap[:, :, None], tf.int32), axis=2)
        bucket = tf.where(has_prev, above + 2, 1)
        # step s of n lands at column max_len - n + s; older steps fall off the window
        column = self.max_len - n_steps[:, None] + step  # [B, E]
        keep = starts & (column >= 0)
        where = tf.where(keep)  # [S, 2] (user, event)
        at = tf.stack([where[:, 0], tf.cast(tf.gather_nd(column, where), tf.int64)], axis=1)
        shape = tf.cast(tf.stack([tf.shape(item_id)[0], self.max_len]), tf.int64)

        def lay(values: tf.Tensor) -> tf.Tensor:  # [B, E] -> [B, L], zeros where no step
            return tf.scatter_nd(at, tf.cast(tf.gather_nd(values, where), tf.int32), shape)

        features = {
            "item_idx": lay(idx),
            "event_type_idx": lay(stage + 1),
            "time_gap_bucket": lay(bucket),
            "session_idx": lay(session),
        }
        return {"features": features, "seen": idx, "n_steps": n_steps, "n_events": n_events}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.string, name="item_id"),
            tf.TensorSpec([None, None], tf.string, name="event_type"),
            tf.TensorSpec([None, None], tf.float64, name="ts"),
        ]
    )
    def serve(self, item_id: tf.Tensor, event_type: tf.Tensor, ts: tf.Tensor) -> dict[str, tf.Tensor]:
        """Users' raw events [B, E] (``item_id`` "" pads; ``ts`` in epoch seconds) -> outputs."""
        built = self.steps(item_id, event_type, ts)
        features = built["features"]
        out = self.encoder({f: features[f] for f in SEQUENCE_FEATURES}, training=False, last_only=True)
        user = tf.math.l2_normalize(out["user"], axis=-1, epsilon=1e-24)  # [B, D]
        interests = tf.math.l2_normalize(out["interests"], axis=-1, epsilon=1e-24)  # [B, K, D]
        table = tf.convert_to_tensor(self.encoder.item_table)[FIRST_ITEM:]  # [V - 2, D]
        scores = tf.matmul(user, table, transpose_b=True)  # [B, V - 2]
        b = tf.shape(scores)[0]
        seen = built["seen"]  # [B, E] item indices, 0 where none
        rows = tf.broadcast_to(tf.range(b, dtype=tf.int64)[:, None], tf.shape(seen))
        hit = seen >= FIRST_ITEM
        marks = tf.scatter_nd(
            tf.stack([tf.boolean_mask(rows, hit), tf.boolean_mask(seen, hit) - FIRST_ITEM], axis=1),
            tf.ones_like(tf.boolean_mask(seen, hit), tf.float32),
            tf.cast(tf.shape(scores), tf.int64),
        )
        scores = tf.where(marks > 0, -np.inf, scores)
        n = min(self.rules.top_n, int(table.shape[0]))
        best, best_item = tf.math.top_k(scores, k=n)  # [B, n]
        items = tf.where(tf.math.is_finite(best), tf.gather(self.ids, best_item + FIRST_ITEM), "")

        window = features["item_idx"]  # [B, L]
        weight = tf.cast(out["attention"], tf.float64)  # [B, L]
        real = window >= FIRST_ITEM
        same = (window[:, :, None] == window[:, None, :]) & real[:, None, :]  # [B, L, L]
        total = tf.reduce_sum(tf.where(same, weight[:, None, :], 0.0), axis=2)  # the item's summed weight
        pos = tf.range(self.max_len)
        repeat = tf.reduce_any(same & (pos[None, :] < pos[:, None])[None], axis=2)  # seen at an earlier position
        candidate = real & ~repeat
        by_item = tf.argsort(window, axis=1, stable=True)  # ties go to the lower item index
        key = tf.gather(tf.where(candidate, -total, np.inf), by_item, batch_dims=1)
        order = tf.gather(by_item, tf.argsort(key, axis=1, stable=True), batch_dims=1)[:, : self.rules.top_items]
        named = tf.gather(candidate, order, batch_dims=1)
        return {
            "embedding": user,
            "interests": interests,
            "item_ids": items,
            "scores": best,
            "top_items": tf.where(named, tf.gather(self.ids, tf.gather(window, order, batch_dims=1)), ""),
            "top_weights": tf.where(named, tf.cast(tf.gather(total, order, batch_dims=1), tf.float32), 0.0),
            "n_steps": built["n_steps"],
            "n_events": built["n_events"],
            "is_cold_start": built["n_steps"] < self.rules.cold_start_min_steps,
            "model_version": tf.fill([b], self.version),
        }


def export_serving(encoder: Encoder, item_ids: np.ndarray, rules: ServingRules, version: str, folder: str) -> bool:
    """Write the SavedModel of ``encoder`` to ``folder`` (``<n>`` of the TensorFlow Serving layout)
    through the storage layer: written under a name TensorFlow Serving skips, then renamed into
    place, so a server watching the folder never loads half a model. A folder already there is
    that version's export and is kept (False)."""
    if storage.exists(storage.join(folder, "saved_model.pb")):
        return False
    module = ServingModule(encoder, item_ids, rules, version)
    staging = storage.join(storage.parent(folder), f"_staging-{storage.name(folder)}")
    with storage.scratch("interest-serving-") as local:
        out = os.path.join(local, "model")
        tf.saved_model.save(module, out, signatures={SIGNATURE: module.serve})
        os.makedirs(os.path.join(out, "assets.extra"), exist_ok=True)
        with open(os.path.join(out, "assets.extra", "model_version"), "w") as f:
            f.write(version + "\n")
        if storage.exists(staging):
            storage.delete(staging)
        storage.upload(out, staging)
    if storage.exists(folder):  # a half-made export of an earlier run
        storage.delete(folder)
    storage.rename(staging, folder)
    return True
