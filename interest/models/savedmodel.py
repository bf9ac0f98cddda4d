"""An encoder exported for TensorFlow Serving: raw events in, embedding, new items and explanation out.

A serving client has a user's recent raw events, not our sequence rows. The exported graph does
what the sessionize and embed stages do for one user, in TensorFlow only, so a process that has
never imported ``interest`` (a TensorFlow Serving container, a Python service with just
TensorFlow) gets the nightly's answer:

1. events, by the row rules of ``interest.rows``: ids and event types trimmed, types lower-cased,
   times read from the log's text (epoch seconds or milliseconds, or ISO-8601); rows the nightly
   quarantines are dropped (a blank item, a time that does not parse or is negative, an event
   type the run does not know; "" pads); exact repeats (same item, type and time) count once;
   order by time (ties in arrival order); a bot's events are dropped as the nightly rejects them
   (``sessionize.bot_max_events_per_day`` on some UTC day: all of the user's with ``exclude``,
   that day's past the limit with ``cap``);
2. steps, by the nightly's rules (``etl.sessions.steps_of_users``): a session starts after a gap
   of ``gap_minutes`` and is cut every ``max_events`` events and ``max_minutes``; consecutive
   events on one item within a session merge into one step, with the latest funnel stage among
   them; each step's time-gap bucket comes from the time since the previous step;
3. the latest ``max_len`` steps, left-padded as ``etl.sequences`` lays them out (with
   ``embed.whole_history``, the memory encoder's older windows too, read by ``read_windows``), item ids looked
   up in the night's vocabulary inside the graph (unknown ids -> the unknown index; items newer
   than the model are read as the unknown item, as the embed stage reads them);
4. the encoder; the L2-normalised user vector; the ``top_n`` best items the user has not
   interacted with (dot products with the night's scoring table, newer items included, as the
   embed stage scores them); the ``top_items`` history items with the largest summed attention
   (the explanation). A user with no event left gets the nightly's fallback: the popularity
   prior and the most popular items.

Layout: ``<models>/<encoder>/_serving/<n>/saved_model.pb``, one per night that published, with
``n`` increasing with the night's date, then the time the model was made, so TensorFlow
Serving's default policy (the highest ``n``) serves the newest night; ``<n>/assets.extra/
model_version`` names the model folder it came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from interest import rows, storage
from interest.layout import exports_root, serving_date
from interest.models.encoders import Encoder, fresh_steps
from interest.models.retrieval import Retrieval, category_codes
from interest.schema import FIRST_ITEM, PAD, SEQUENCE_FEATURES, UNKNOWN, window_stride

SIGNATURE = "serving_default"


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
    ts_format: str = "auto"  # ingest.ts_format: how a bare number is read (rows.NUMERIC_FORMATS)
    retrieval: Retrieval = Retrieval()  # how several interests retrieve (embed settings)
    bot_max_events_per_day: int | None = None  # sessionize's bot rule; None: no limit
    bot_policy: str = "exclude"  # exclude: every event of such a user; cap: a day's events past it
    windows: int = 1  # stored windows the encoder reads (embed.whole_history: sessionize.max_windows)


@dataclass(frozen=True)
class Catalogue:
    """The night's items as the embed stage scores them, and its answer to a user without events."""

    item_ids: np.ndarray  # [V] the id of each index (inference.item_ids_by_index)
    table: np.ndarray  # [V, D] the scoring table (inference.scoring_table): newer items included
    prior: np.ndarray  # [D] the popularity prior
    popular: list[tuple[str, float]]  # the fallback's items and scores (inference.popular_items)
    categories: np.ndarray | None = None  # [V] each index's category (inference.item_categories)


def parse_times(text: tf.Tensor, ts_format: str) -> tuple[tf.Tensor, tf.Tensor]:
    """The log's times as text [B, E] -> (epoch microseconds int64 [B, E], parsed bool [B, E]),
    by the rules of ``interest.rows`` (numbers first, then ISO-8601; naive means UTC)."""
    text = tf.strings.regex_replace(text, rows.TRIM_PATTERN, "")
    is_number = tf.strings.regex_full_match(text, rows.NUMBER_PATTERN)
    number = tf.strings.to_number(tf.where(is_number, text, "0"), tf.float64)
    if ts_format == "epoch_s":
        millis = number * 1000
    elif ts_format == "epoch_ms":
        millis = number
    else:
        millis = tf.where(tf.abs(number) < rows.EPOCH_MS_FROM, number * 1000, number)
    held = tf.abs(millis) <= rows.MAX_ABS_MS  # false for inf
    millis = tf.where(held, millis, 0.0)
    from_number = tf.cast(tf.math.floor(tf.abs(millis)) * tf.sign(millis), tf.int64) * 1000  # truncated
    is_number &= held
    if ts_format in ("epoch_s", "epoch_ms"):
        return from_number, is_number
    is_iso = tf.strings.regex_full_match(text, rows.ISO_PATTERN) & ~is_number
    whole = f"^{rows.ISO_PATTERN}$"

    def group(n: int, default: str = "0") -> tf.Tensor:  # the n-th group of the pattern, as text
        found = tf.strings.regex_replace(tf.where(is_iso, text, ""), whole, f"\\{n}")
        return tf.where(found == "", default, found)

    def number_of(n: int) -> tf.Tensor:
        return tf.strings.to_number(group(n), tf.int64)

    year, month, day = number_of(1), number_of(2), number_of(3)
    # days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil)
    y = year - tf.cast(month <= 2, tf.int64)
    era = tf.math.floordiv(y, 400)
    yoe = y - era * 400
    doy = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    fraction = tf.strings.to_number(tf.strings.substr(group(7, "") + "000000", 0, 6), tf.int64)
    zone = group(8, "+00:00")  # Z or none: UTC
    zone = tf.where(zone == "Z", "+00:00", zone)
    sign = tf.where(tf.strings.substr(zone, 0, 1) == "-", tf.constant(-1, tf.int64), 1)
    hours, minutes = (tf.strings.to_number(tf.strings.substr(zone, i, 2), tf.int64) for i in (1, 4))
    offset = sign * (hours * 60 + minutes)  # minutes east of UTC
    hour, minute, second = number_of(4), number_of(5), number_of(6)
    seconds = days * 86400 + hour * 3600 + (minute - offset) * 60 + second
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_days = tf.gather(tf.constant([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], tf.int64), month % 13)
    month_days += tf.cast(leap & (month == 2), tf.int64)
    real = (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days)  # a calendar date
    real &= (hour <= 23) & (minute <= 59) & (second <= 59) & (minutes <= 59) & (hours * 60 + minutes <= 18 * 60)
    micros = tf.where(is_number, from_number, seconds * 1_000_000 + fraction)
    real &= tf.abs(micros) <= rows.MAX_ABS_MS * 1000
    return micros, is_number | (is_iso & real)


def _last_flag_index(flags: tf.Tensor) -> tf.Tensor:
    """[B, E] bool -> [B, E] int32: the last position j <= i where ``flags`` holds (0 if none).

    Linear in E: the flags cut each row into runs (a run starts at a flag), and a position's
    answer is the start of its run, the smallest position in it."""
    b, e = tf.shape(flags)[0], tf.shape(flags)[1]
    run = tf.cumsum(tf.cast(flags, tf.int32), axis=1)  # [B, E] 0 before the first flag
    segment = tf.range(b)[:, None] * (e + 1) + run  # [B, E] a run id unique over the batch
    j = tf.broadcast_to(tf.range(e)[None, :], tf.shape(flags))
    start = tf.math.unsorted_segment_min(j, segment, b * (e + 1))  # [B * (E + 1)]
    return tf.where(run > 0, tf.gather(start, segment), 0)


def _bot_events(micros: tf.Tensor, valid: tf.Tensor, limit: int, policy: str) -> tf.Tensor:
    """The events the nightly rejects as a bot's (``etl.sessions.clean_users``), judged by UTC day
    on the deduplicated events: micros [B, E] epoch microseconds, sorted by time with the valid
    events first; valid [B, E] -> [B, E] bool. ``exclude``: every event of a user with more than
    ``limit`` on some day; ``cap``: each day's events past the first ``limit``."""
    day = tf.math.floordiv(micros, 86_400_000_000)  # [B, E]
    j = tf.range(tf.shape(day)[1])[None, :]
    new_day = (j == 0) | (day != tf.concat([day[:, :1], day[:, :-1]], axis=1))  # [B, E]
    nth = j - _last_flag_index(new_day) + 1  # [B, E] 1, 2, ... within its day
    over = valid & (nth > limit)
    return over if policy == "cap" else valid & tf.reduce_any(over, axis=1, keepdims=True)


def _per_segment_max(values: tf.Tensor, segment: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """[B, E] values, segment ids (from 0 within each row), valid -> [B, E] the largest valid value
    of each position's segment (-1 where it has none). Linear in E."""
    b, e = tf.shape(values)[0], tf.shape(values)[1]
    ids = tf.range(b)[:, None] * e + tf.clip_by_value(segment, 0, e - 1)  # [B, E]
    top = tf.math.unsorted_segment_max(tf.where(valid, values, -1), ids, b * e)  # [B * E]
    return tf.maximum(tf.gather(top, ids), -1)  # an empty segment's max is the dtype's lowest


def _exact_repeats(micros: tf.Tensor, item_id: tf.Tensor, rank: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """[B, E] -> [B, E] bool: a valid event with the same time, item and type as an earlier valid
    one. The events are ordered by (time, item, type, arrival) with stable sorts, so copies sit
    next to each other and each is compared with its neighbour: O(E log E), not [B, E, E]. Items
    are sorted by a 62-bit hash of the id and compared by the id itself."""
    key = tf.strings.to_hash_bucket_fast(item_id, 2**62)  # [B, E] int64
    order = tf.argsort(tf.where(valid, rank, -1), axis=1, stable=True)  # [B, E]
    for k in (key, micros):  # the last sort is the first key
        order = tf.gather(order, tf.argsort(tf.gather(k, order, batch_dims=1), axis=1, stable=True), batch_dims=1)
    m, i, r, v = (tf.gather(x, order, batch_dims=1) for x in (micros, item_id, rank, valid))

    def same_as_previous(x: tf.Tensor) -> tf.Tensor:
        return tf.concat([tf.zeros_like(x[:, :1], tf.bool), x[:, 1:] == x[:, :-1]], axis=1)

    copy = same_as_previous(m) & same_as_previous(i) & same_as_previous(r) & v
    copy &= tf.concat([tf.zeros_like(v[:, :1]), v[:, :-1]], axis=1)  # the previous one is valid too
    inverse = tf.argsort(order, axis=1, stable=True)  # [B, E] back to arrival order
    return tf.gather(copy, inverse, batch_dims=1)


class ServingModule(tf.Module):
    """The encoder and its lookups behind one ``serve`` function (the serving signature)."""

    def __init__(self, encoder: Encoder, catalogue: Catalogue, rules: ServingRules, version: str):
        super().__init__()
        self.encoder, self.rules, self.max_len = encoder, rules, int(encoder.args["max_len"])
        self.vocab_size = int(encoder.args["vocab_size"])  # the model's items; later ones read as unknown
        item_ids = np.asarray(catalogue.item_ids, dtype=object)
        real = np.array([i for i in range(FIRST_ITEM, len(item_ids)) if item_ids[i] is not None], np.int64)
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
        self.table = tf.constant(np.asarray(catalogue.table, np.float32)[FIRST_ITEM:])  # [V - 2, D]
        self.prior = tf.constant(np.asarray(catalogue.prior, np.float32))  # [D]
        n = min(rules.top_n, len(item_ids) - FIRST_ITEM)
        popular = catalogue.popular[:n]
        self.popular_ids = tf.constant([i for i, _ in popular] + [""] * (n - len(popular)))  # [n]
        self.popular_scores = tf.constant([s for _, s in popular] + [-np.inf] * (n - len(popular)), tf.float32)
        self.version = tf.constant(version)
        codes = category_codes(catalogue.categories)
        self.codes = None if codes is None else tf.constant(codes.astype(np.int32))  # [V]
        self.n_categories = 0 if codes is None else int(codes.max(initial=0)) + 1

    def steps(self, item_id: tf.Tensor, event_type: tf.Tensor, ts: tf.Tensor) -> dict[str, tf.Tensor]:
        """Raw events [B, E] -> the sequence features [B, L] (left-padded), the seen items [B, E]
        and the counts [B]; see the module docstring for the rules."""
        r = self.rules
        item_id = tf.strings.regex_replace(item_id, rows.TRIM_PATTERN, "")  # blank: null, as padding
        event_type = tf.strings.lower(tf.strings.regex_replace(event_type, rows.TRIM_PATTERN, ""), encoding="utf-8")
        micros, parsed = parse_times(ts, r.ts_format)  # [B, E] each
        rank = tf.cast(self.types.lookup(event_type), tf.int32)  # [B, E], -1: unknown type
        valid = (item_id != "") & (rank >= 0) & parsed & (micros >= 0)
        ts = tf.cast(micros, tf.float64) / 1e6  # [B, E] epoch seconds
        e = tf.shape(item_id)[1]
        j = tf.range(e)
        valid &= ~_exact_repeats(micros, item_id, rank, valid)  # [B, E]
        order = tf.argsort(tf.where(valid, ts, np.inf), axis=1, stable=True)  # valid first, by time
        item_id, rank, ts, valid, micros = (
            tf.gather(x, order, batch_dims=1) for x in (item_id, rank, ts, valid, micros)
        )
        if r.bot_max_events_per_day is not None:
            valid &= ~_bot_events(micros, valid, r.bot_max_events_per_day, r.bot_policy)
            order = tf.argsort(tf.where(valid, ts, np.inf), axis=1, stable=True)  # the kept ones first again
            item_id, rank, ts, valid = (tf.gather(x, order, batch_dims=1) for x in (item_id, rank, ts, valid))
        idx = tf.where(valid, self.items.lookup(item_id), PAD)  # [B, E] int64
        n_events = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)  # [B]

        first = j[None, :] == 0
        gap = ts - tf.concat([ts[:, :1], ts[:, :-1]], axis=1)  # [B, E] seconds since the previous event
        base = _last_flag_index(first | (gap >= r.gap_minutes * 60))  # [B, E] the session's first event
        pos = j[None, :] - base
        chunk = tf.floor((ts - tf.gather(ts, base, batch_dims=1)) / (r.max_minutes * 60))
        cut = first | (pos % r.max_events == 0) | (chunk != tf.concat([chunk[:, :1], chunk[:, :-1]], axis=1))
        session = tf.cumsum(tf.cast(cut, tf.int32), axis=1)  # [B, E] from 1
        new_item = item_id != tf.concat([item_id[:, :1], item_id[:, :-1]], axis=1)
        starts = (cut | new_item) & valid  # [B, E] an event that begins a step
        step = tf.cumsum(tf.cast(starts, tf.int32), axis=1) - 1  # [B, E] its step
        n_steps = tf.reduce_sum(tf.cast(starts, tf.int32), axis=1)  # [B]
        stage = _per_segment_max(rank, step, valid)  # [B, E] the latest funnel stage within the step
        # the previous step's start: the last start strictly before this event (none: bucket 1)
        after_start = tf.concat([tf.zeros_like(starts[:, :1]), starts[:, :-1]], axis=1)  # [B, E]
        has_prev = tf.cumsum(tf.cast(after_start, tf.int32), axis=1) > 0
        prev = tf.maximum(_last_flag_index(after_start) - 1, 0)
        step_gap = ts - tf.gather(ts, prev, batch_dims=1)  # [B, E]
        edges = tf.constant(r.edges_s, tf.float64)
        above = tf.reduce_sum(tf.cast(edges[None, None, :] < step_gap[:, :, None], tf.int32), axis=2)
        bucket = tf.where(has_prev, above + 2, 1)
        values = {"item_idx": idx, "event_type_idx": stage + 1, "time_gap_bucket": bucket, "session_idx": session}
        laid = [self._lay(values, starts, step, n_steps, back) for back in range(r.windows)]  # newest first
        window = laid[0]["item_idx"] if r.windows == 1 else tf.stack([w["item_idx"] for w in laid[::-1]], axis=1)
        features = {  # [B, L] each, or [B, C, L] with the oldest window first
            f: laid[0][f] if r.windows == 1 else tf.stack([w[f] for w in laid[::-1]], axis=1) for f in values
        }
        # the night's indices; the model reads items newer than it as unknown
        features["item_idx"] = tf.where(window >= self.vocab_size, UNKNOWN, window)
        return {"features": features, "window": window, "seen": idx, "n_steps": n_steps, "n_events": n_events}

    def _lay(
        self, values: dict[str, tf.Tensor], starts: tf.Tensor, step: tf.Tensor, n_steps: tf.Tensor, back: int
    ) -> dict[str, tf.Tensor]:
        """Step features [B, E] (each step at the event that starts it) -> the stored window
        ``back`` windows before the latest ([B, L] each, left-padded), as ``etl.sequences`` lays
        it out: it ends ``back`` strides before the last step, and exists only where the steps
        before the newer window's start reach it."""
        stride = window_stride(self.max_len)
        end = n_steps[:, None] - back * stride  # [B, 1] how many steps the window ends after
        column = self.max_len - end + step  # [B, E] step s lands at column max_len - end + s
        keep = starts & (column >= 0) & (column < self.max_len)
        if back:
            keep &= n_steps[:, None] - self.max_len > (back - 1) * stride
        where = tf.where(keep)  # [S, 2] (user, event)
        at = tf.stack([where[:, 0], tf.cast(tf.gather_nd(column, where), tf.int64)], axis=1)
        shape = tf.cast(tf.stack([tf.shape(starts)[0], self.max_len]), tf.int64)
        return {f: tf.scatter_nd(at, tf.cast(tf.gather_nd(v, where), tf.int32), shape) for f, v in values.items()}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.string, name="item_id"),
            tf.TensorSpec([None, None], tf.string, name="event_type"),
            tf.TensorSpec([None, None], tf.string, name="ts"),
        ]
    )
    def serve(self, item_id: tf.Tensor, event_type: tf.Tensor, ts: tf.Tensor) -> dict[str, tf.Tensor]:
        """Users' raw events [B, E] as the log has them (``item_id`` "" pads; ``ts`` the log's
        text: epoch seconds or milliseconds, or ISO-8601) -> outputs."""
        built = self.steps(item_id, event_type, ts)
        features = {f: built["features"][f] for f in SEQUENCE_FEATURES}
        if self.rules.windows > 1:  # every stored window, the explanation over all their steps
            out = self.encoder.read_windows(features, fresh_steps(features["item_idx"]))
        else:
            out = self.encoder(features, training=False, last_only=True)
        empty = built["n_steps"] == 0  # [B] no event left: the nightly's fallback
        user = tf.math.l2_normalize(out["user"], axis=-1, epsilon=1e-24)  # [B, D]
        user = tf.where(empty[:, None], self.prior[None, :], user)
        interests = tf.math.l2_normalize(out["interests"], axis=-1, epsilon=1e-24)  # [B, K, D]
        interests = tf.where(empty[:, None, None], self.prior[None, None, :], interests)
        table = self.table  # [V - 2, D]
        # [B, L] (or [B, C * L]) the night's indices, as the embed stage explains them
        window = tf.reshape(built["window"], [tf.shape(user)[0], -1])
        r = self.rules.retrieval
        if r.multi_interest and interests.shape[1] > 1:  # each kept interest retrieves on its own
            queries, behind = interests, out["interest_attention"]  # [B, K, D], [B, K, L]
            keep = kept_interests(interests, out["interest_weight"], window, r.min_weight, r.max_cosine)
        else:
            queries, behind = user[:, None], out["attention"][:, None]  # [B, 1, D], [B, 1, L]
            keep = tf.ones_like(user[:, :1], tf.bool)  # [B, 1]
        k = queries.shape[1]
        scores = tf.einsum("bkd,vd->bkv", queries, table)  # [B, K, V - 2]
        b = tf.shape(scores)[0]
        seen = built["seen"]  # [B, E] item indices, 0 where none
        rows = tf.broadcast_to(tf.range(b, dtype=tf.int64)[:, None], tf.shape(seen))
        hit = seen >= FIRST_ITEM
        marks = tf.scatter_nd(
            tf.stack([tf.boolean_mask(rows, hit), tf.boolean_mask(seen, hit) - FIRST_ITEM], axis=1),
            tf.ones_like(tf.boolean_mask(seen, hit), tf.float32),
            tf.cast(tf.stack([b, tf.shape(table)[0]]), tf.int64),
        )  # [B, V - 2]
        scores = tf.where(marks[:, None, :] > 0, -np.inf, scores)
        n = min(self.rules.top_n, int(table.shape[0]))
        each, each_item = tf.math.top_k(scores, k=n)  # [B, K, n]
        best_item, best, slot = merge_interests(
            each_item + FIRST_ITEM, each, keep, n, self.codes, self.n_categories, r.diversity
        )
        found = tf.math.is_finite(best)  # [B, n]
        items = tf.where(found, tf.gather(self.ids, best_item), "")
        items = tf.where(empty[:, None], self.popular_ids[None, :], items)
        best = tf.where(empty[:, None], self.popular_scores[None, :], best)

        order, named, total = heaviest(window, tf.cast(out["attention"], tf.float64), self.rules.top_items)
        # the history items behind each interest, then behind each recommendation's interest
        because, because_named, _ = heaviest(
            tf.repeat(window, k, axis=0), tf.reshape(tf.cast(behind, tf.float64), [b * k, -1]), r.because
        )  # [B * K, m]
        because_ids = tf.where(
            because_named, tf.gather(self.ids, tf.gather(tf.repeat(window, k, axis=0), because, batch_dims=1)), ""
        )
        reason = tf.gather(tf.reshape(because_ids, [b, k, -1]), slot, batch_dims=1)  # [B, n, m]
        reason_at = found & ~empty[:, None]
        return {
            "embedding": user,
            "interests": interests,
            "item_ids": items,
            "scores": best,
            "top_items": tf.where(named, tf.gather(self.ids, tf.gather(window, order, batch_dims=1)), ""),
            "top_weights": tf.where(named, tf.cast(tf.gather(total, order, batch_dims=1), tf.float32), 0.0),
            "interest": tf.where(reason_at, tf.cast(slot, tf.int32), -1),  # [B, n] the slot that retrieved each item
            "because": tf.where(reason_at[:, :, None], reason, ""),  # [B, n, m] the history items behind it
            "n_steps": built["n_steps"],
            "n_events": built["n_events"],
            "is_cold_start": built["n_steps"] < self.rules.cold_start_min_steps,
            "model_version": tf.fill([b], self.version),
        }


def heaviest(window: tf.Tensor, weight: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The ``k`` history items with the largest summed weight, as ``scoring.topn.top_weighted_batch``
    picks them. window [R, L] item indices, weight [R, L] float64 -> (positions [R, k], named
    [R, k]: a real item is there, summed weight per position [R, L])."""
    r, n = tf.shape(window)[0], tf.shape(window)[1]
    real = window >= FIRST_ITEM
    by_item = tf.argsort(window, axis=1, stable=True)  # [R, L] positions by item, then position
    items = tf.gather(window, by_item, batch_dims=1)
    first = tf.concat([tf.ones_like(items[:, :1], tf.bool), items[:, 1:] != items[:, :-1]], axis=1)  # [R, L]
    group = tf.range(r)[:, None] * n + tf.cumsum(tf.cast(first, tf.int32), axis=1) - 1  # [R, L] one id per item
    kept = tf.where(tf.gather(real, by_item, batch_dims=1), tf.gather(weight, by_item, batch_dims=1), 0.0)
    sums = tf.math.unsorted_segment_sum(kept, group, r * n)  # [R * L] each item's weight, positions in order
    back = tf.argsort(by_item, axis=1, stable=True)  # [R, L] to position order
    total = tf.gather(tf.gather(sums, group), back, batch_dims=1)  # [R, L] the item's summed weight
    candidate = real & tf.gather(first, back, batch_dims=1)  # each item's earliest position
    # O(L log L) per row, not [R, L, L]: a whole history (embed.whole_history) is C * L steps
    key = tf.gather(tf.where(candidate, -total, np.inf), by_item, batch_dims=1)
    order = tf.gather(by_item, tf.argsort(key, axis=1, stable=True), batch_dims=1)[:, :k]
    return order, tf.gather(candidate, order, batch_dims=1), total


def kept_interests(
    interests: tf.Tensor, weight: tf.Tensor, window: tf.Tensor, min_weight: float, max_cosine: float
) -> tf.Tensor:
    """``scoring.interests.kept_interests`` in the graph: interests [B, K, D], weight [B, K],
    window [B, L] -> [B, K] bool."""
    k = interests.shape[1]
    ordered = tf.sort(tf.where(window >= FIRST_ITEM, window, -1), axis=1)  # [B, L]
    first = tf.concat([tf.ones_like(ordered[:, :1], tf.bool), ordered[:, 1:] != ordered[:, :-1]], axis=1)
    room = tf.maximum(tf.reduce_sum(tf.cast((ordered >= FIRST_ITEM) & first, tf.int32), axis=1), 1)  # [B]
    order = tf.argsort(-weight, axis=1, stable=True)  # [B, K]
    keep = tf.zeros_like(weight, tf.bool)
    count = tf.zeros_like(room)
    for rank in range(k):
        slot = order[:, rank]  # [B]
        cosine = tf.einsum("bd,bjd->bj", tf.gather(interests, slot, batch_dims=1), interests)  # [B, K]
        copy = tf.reduce_any(keep & (cosine >= max_cosine), axis=1)
        heavy = tf.gather(weight, slot, batch_dims=1) >= min_weight
        ok = (heavy | (rank == 0)) & ~copy & (count < room)  # [B]
        keep = keep | (tf.one_hot(slot, k, on_value=True, off_value=False) & ok[:, None])
        count += tf.cast(ok, count.dtype)
    return keep


def merge_interests(
    items: tf.Tensor,
    scores: tf.Tensor,
    keep: tf.Tensor,
    n: int,
    codes: tf.Tensor | None,
    n_categories: int,
    diversity: float,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """``scoring.interests.merge_interests`` in the graph: items, scores [B, K, N], keep [B, K] ->
    (items [B, n], scores [B, n], slot [B, n])."""
    k, width = items.shape[1], items.shape[2]
    b, c = tf.shape(items)[0], k * width
    score = tf.reshape(tf.where(keep[:, :, None], scores, -np.inf), [b, c])  # [B, C]
    item = tf.reshape(tf.cast(items, tf.int32), [b, c])
    slot = tf.broadcast_to(tf.repeat(tf.range(k), width)[None], [b, c])
    # one entry per item: its best score, ties to the lower slot
    same = item[:, :, None] == item[:, None, :]  # [B, C, C]
    other, this = score[:, None, :], score[:, :, None]
    better = (other > this) | ((other == this) & (slot[:, None, :] < slot[:, :, None]))
    score = tf.where(tf.reduce_any(same & better, axis=2), -np.inf, score)
    by_item = tf.argsort(item, axis=1, stable=True)  # by score, then the lower item index
    order = tf.gather(by_item, tf.argsort(-tf.gather(score, by_item, batch_dims=1), axis=1, stable=True), batch_dims=1)
    item, score, slot = (tf.gather(a, order, batch_dims=1) for a in (item, score, slot))
    n = min(n, c)
    if diversity <= 0 or codes is None:
        return item[:, :n], score[:, :n], slot[:, :n]
    code = tf.gather(codes, item)  # [B, C]
    picked = tf.zeros([b, n_categories], tf.float32)
    left = tf.math.is_finite(score)
    picks, found = [], []
    for _ in range(n):
        adjusted = tf.where(
            left, score - tf.constant(diversity, tf.float32) * tf.gather(picked, code, batch_dims=1), -np.inf
        )
        pick = tf.argmax(adjusted, axis=1, output_type=tf.int32)  # ties: the earlier, the better score
        got = tf.gather(left, pick, batch_dims=1)
        left = left & ~tf.one_hot(pick, c, on_value=True, off_value=False)
        picked += tf.one_hot(tf.gather(code, pick, batch_dims=1), n_categories) * tf.cast(got, tf.float32)[:, None]
        picks.append(pick)
        found.append(got)
    at, got = tf.stack(picks, axis=1), tf.stack(found, axis=1)  # [B, n]
    chosen = tf.where(got, tf.gather(score, at, batch_dims=1), -np.inf)
    return tf.gather(item, at, batch_dims=1), chosen, tf.gather(slot, at, batch_dims=1)


def stage_serving(encoder: Encoder, catalogue: Catalogue, rules: ServingRules, version: str, folder: str) -> str | None:
    """Write the SavedModel of ``encoder`` beside ``folder`` (``<n>`` of the TensorFlow Serving
    layout), under a name TensorFlow Serving skips; :func:`commit_serving` renames it into place
    once the night has published, so a server never loads half a model or a night that failed.
    Returns the staging folder, or None where ``folder`` holds that export already."""
    if storage.exists(storage.join(folder, "saved_model.pb")):
        return None
    module = ServingModule(encoder, catalogue, rules, version)
    staging = storage.staging_name(folder)
    with storage.scratch("interest-serving-") as local:
        out = os.path.join(local, "model")
        tf.saved_model.save(module, out, signatures={SIGNATURE: module.serve})
        os.makedirs(os.path.join(out, "assets.extra"), exist_ok=True)
        with open(os.path.join(out, "assets.extra", "model_version"), "w") as f:
            f.write(version + "\n")
        if storage.exists(staging):
            storage.delete(staging)
        storage.upload(out, staging)
    return staging


def commit_serving(staging: str | None, folder: str) -> bool:
    """Put a staged export in place (False: nothing was staged; the folder holds it already)."""
    if staging is None:
        return False
    storage.replace(staging, folder)  # a folder there is a half-made export of an earlier run
    return True


def drop_exports(model_dir: str, dates: list[str]) -> list[str]:
    """Delete the exports of the nights ``dates`` (those retention dropped from the tables)."""
    base = exports_root(model_dir)
    if not dates or not storage.exists(base):
        return []
    gone = [storage.join(base, n) for n in storage.list_dirs(base) if n.isdigit() and serving_date(int(n)) in dates]
    for folder in gone:
        storage.delete(folder)
    return gone


def export_serving(encoder: Encoder, catalogue: Catalogue, rules: ServingRules, version: str, folder: str) -> bool:
    """Stage and commit in one step (a caller with nothing to publish between them)."""
    return commit_serving(stage_serving(encoder, catalogue, rules, version, folder), folder)
