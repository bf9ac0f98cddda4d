"""The row rules: how one raw event's fields are read, defined once for every path that reads them.

Three paths read raw events: the nightly (Spark, ``etl.validate``, or by column in its Python
pass, ``etl.validate_arrow``), the request-time ``Recommender`` (pandas, here) and the exported
TensorFlow graph (``models.savedmodel``). Each implements the rules below from these constants,
and property tests feed them the same generated logs and texts, so a rule changed in one path
only fails the build.

- ids and event types are trimmed of spaces (only 0x20, as Spark's ``trim``); blank is null;
- event types are lower-cased, then looked up in ``sessionize.event_types``;
- a time is a number (``NUMBER_PATTERN``: epoch seconds below ``EPOCH_MS_FROM`` in absolute
  value, else milliseconds; truncated to the millisecond) or ISO-8601 text (``ISO_PATTERN``, a
  real calendar date and clock time; naive means UTC; truncated to the microsecond). Text with a
  ':' is never a number. Anything else (``1.5d``, ``0x1p3``, ``Infinity``, ``NaN``, ``2026/11/13``,
  a zone by name, Feb 30) is unparseable, and so is a time more than ``MAX_ABS_MS`` from the
  epoch either way.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

# Checked in this order; the first that applies is the row's reason (etl.validate).
REASONS = (
    "malformed_line",
    "null_user_id",
    "null_item_id",
    "null_ts",
    "unparseable_ts",
    "negative_ts",
    "future_ts",
    "unknown_event_type",
)
PAD_CHAR = " "  # ids and types are trimmed of this character only, as Spark's trim does
TRIM_PATTERN = "^ +| +$"  # the same, as one regular expression (TensorFlow)
EPOCH_MS_FROM = 1e11  # a bare number at or above this (in absolute value) is epoch milliseconds
NUMBER_PATTERN = r"[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?"
# ISO-8601 as Spark's timestamp cast reads it, in the forms the graph parses: a date, then an
# optional time (seconds and fraction optional), then a zone (Z or +hh:mm, at most 18:00 away),
# which Spark's cast takes only after the seconds
ISO_PATTERN = (
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.]([0-9]{1,9}))?(Z|[+-][0-9]{2}:[0-9]{2})?)?)?"
)
NUMERIC_FORMATS = ("auto", "epoch_s", "epoch_ms")  # what request time and the graph read alike
# the latest (and, negated, earliest) time any reader holds: pandas' nanosecond datetimes end on
# 2262-04-11; a time past it would also overflow Spark's epoch-millisecond conversion
MAX_ABS_MS = 9_223_372_036_854


def clean_text(values: pd.Series) -> pd.Series:
    """Ids and event types: trimmed of spaces, blank (or missing) -> None."""
    text = values.astype("object").where(values.notna(), None)
    trimmed = text.map(lambda v: v if v is None else str(v).strip(PAD_CHAR))
    return trimmed.where(trimmed != "", None)


def epoch_millis(number: np.ndarray, ts_format: str) -> np.ndarray:
    """Epoch numbers (float64, NaN where none) -> milliseconds (float64, truncated; NaN kept)."""
    if ts_format == "epoch_s":
        scaled = number * 1000
    elif ts_format == "epoch_ms":
        scaled = number
    else:
        scaled = np.where(np.abs(number) < EPOCH_MS_FROM, number * 1000, number)
    return np.trunc(scaled)


def parse_ts(values: pd.Series, ts_format: str) -> pd.Series:
    """Raw times (text, numbers or datetimes) -> UTC datetimes to the microsecond, NaT where a
    time does not parse. ``ts_format`` of the ingest config: auto, epoch_s or epoch_ms (another
    format is a Spark pattern; request-time times are then read as under auto)."""
    fmt = ts_format if ts_format in NUMERIC_FORMATS else "auto"
    if pd.api.types.is_datetime64_any_dtype(values):
        stamps = pd.to_datetime(values, utc=True)
        return stamps.dt.floor("us")
    text = clean_text(values)  # trimmed; blank or missing: None
    is_number = text.fillna("").str.fullmatch(NUMBER_PATTERN)  # never blank, never with a ':'
    number = pd.to_numeric(text.where(is_number, None), errors="coerce").to_numpy(np.float64)  # [N]
    millis = epoch_millis(number, fmt)
    held = np.abs(np.nan_to_num(millis, nan=np.inf)) <= MAX_ABS_MS
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us, UTC]")
    out[held] = pd.to_datetime(millis[held].astype(np.int64), unit="ms", utc=True)
    if fmt == "auto":  # the rest is ISO-8601 text
        iso = text.notna() & ~is_number & text.fillna("").str.fullmatch(ISO_PATTERN)
        if iso.any():
            instants = pd.to_datetime([_iso_instant(v) for v in text[iso]], utc=True)
            out[iso] = pd.Series(instants, index=text[iso].index).astype("datetime64[us, UTC]")
    return out


def _iso_instant(text: str) -> pd.Timestamp:
    """ISO-8601 text (``ISO_PATTERN``) -> a UTC instant to the microsecond (naive: UTC), NaT where
    it is no real date and time or lies beyond ``MAX_ABS_MS``. One value at a time: pandas reads a
    batch of mixed zones with the first one's offset."""
    zone = re.fullmatch(ISO_PATTERN, text).group(8) or "Z"  # type: ignore[union-attr]
    if zone != "Z" and (int(zone[4:6]) > 59 or int(zone[1:3]) * 60 + int(zone[4:6]) > 18 * 60):
        return pd.NaT  # pandas takes any offset; Spark's zones reach 18:00
    try:
        at = pd.Timestamp(text)
    except ValueError:  # OutOfBoundsDatetime too
        return pd.NaT
    if at is pd.NaT:
        return pd.NaT
    at = (at.tz_localize("UTC") if at.tzinfo is None else at.tz_convert("UTC")).floor("us").as_unit("us")
    return at if abs(int(at.asm8.view("i8"))) <= MAX_ABS_MS * 1000 else pd.NaT  # [us] since the epoch


def reject_reasons(events: pd.DataFrame, event_types: list[str]) -> pd.Series:
    """Each cleaned row's first broken rule among those request time can judge, or None.

    ``events``: ``item_id``, ``event_type`` cleaned (:func:`clean_text`, lower-cased), ``ts_raw``
    and the parsed ``ts``. Malformed lines and user ids are the log's, and "future" is the
    nightly's run date, so neither applies to a request."""
    blank = clean_text(events["ts_raw"]).isna()
    rules = [
        ("null_item_id", events["item_id"].isna()),
        ("null_ts", blank),
        ("unparseable_ts", events["ts"].isna()),
        ("negative_ts", events["ts"] < pd.Timestamp(0, tz="UTC")),
        ("unknown_event_type", ~events["event_type"].isin(event_types)),
    ]
    reason = pd.Series([None] * len(events), index=events.index, dtype="object")
    for name, broken in reversed(rules):
        reason = reason.mask(broken.to_numpy(bool), name)
    return reason


def clean_events(events: pd.DataFrame, event_types: list[str], ts_format: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """A request's raw events (``item_id``, ``event_type``, ``ts``; in arrival order) -> the rows
    the nightly would keep (ids trimmed, types lower-cased, ``ts`` parsed) and the count of the
    others by reason."""
    item_id = clean_text(events["item_id"])
    kind = clean_text(events["event_type"]).map(lambda v: v if v is None else v.lower())
    cleaned = pd.DataFrame(
        {"item_id": item_id, "event_type": kind, "ts_raw": events["ts"], "ts": parse_ts(events["ts"], ts_format)},
        index=events.index,
    )
    reason = reject_reasons(cleaned, event_types)
    rejected = {str(k): int(v) for k, v in reason.value_counts().items()}
    return cleaned[reason.isna()].drop(columns="ts_raw"), rejected
