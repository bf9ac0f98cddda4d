"""Validation over Arrow columns: the rules of ``etl.validate``, run inside the stage's Python pass.

The nightly reads a row as ``etl.validate`` does in Spark, but Spark's reading is row at a time
(a regular expression, a copy and a cast per text), and sorting typed rows by (user, time,
arrival, funnel stage) makes every comparison inside a user fall through to the full row
comparator. Here Spark only hashes the user and sorts by that one long; each batch of whole users
is read, judged and sorted by column. The rows' grammar (``interest.rows``) is the same, and the
tests hold the two readings equal on edge cases and random text.

Only for what the grammar covers: ``ingest.ts_format`` auto, epoch_s or epoch_ms, in a UTC
session (a naive ISO time is then UTC on both paths). A Spark pattern stays with Spark.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from interest.etl.ingest import CORRUPT
from interest.etl.validate import ISO_UTC, NUMBER_TEXT, is_utc
from interest.rows import (
    ISO_PATTERN,
    MAX_ABS_MS,
    NUMERIC_FORMATS,
    PAD_CHAR,
    REASONS,
    epoch_millis,
)


def _named(pattern: str, names: tuple[str, ...]) -> str:
    """``pattern``'s capturing groups named ``names``, in order (Arrow's extract_regex needs names)."""
    given = iter(names)
    named = re.sub(r"\((?!\?)", lambda _: f"(?P<{next(given)}>", pattern)
    assert re.compile(named).groups == len(names), pattern
    return named


_PARTS = ("year", "month", "day", "hour", "minute", "second", "fraction", "zone")
ISO_NAMED = f"^{_named(ISO_PATTERN, _PARTS)}$"
MICROS_PER_DAY = 86_400_000_000
NO_TS = np.iinfo(np.int64).min  # the value under a null time (masked)


def applies(ts_format: str, session_zone: str) -> bool:
    """Whether the Arrow reading is the nightly's for this format and session zone."""
    return ts_format in NUMERIC_FORMATS and is_utc(session_zone)


def trimmed(values: pa.Array) -> pa.Array:
    """Ids, types, categories: trimmed of ``rows.PAD_CHAR`` (spaces, as Spark's trim); blank -> null."""
    text = pc.utf8_trim(values, PAD_CHAR)
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def lowered(values: pa.Array) -> pa.Array:
    """Lower-cased as Spark's ``lower`` (Java's, full Unicode) does: ASCII by Arrow, the rest by
    Python's ``str.lower``, which maps as Java's does (Arrow's mapping differs, e.g. on U+0130)."""
    if pc.all(pc.fill_null(pc.string_is_ascii(values), True)).as_py() is not False:
        return pc.ascii_lower(values)
    return pa.array([v if v is None else v.lower() for v in values.to_pylist()], pa.string())


def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Proleptic Gregorian dates -> days since 1970-01-01 (int64 arrays)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _month_days(y: np.ndarray, m: np.ndarray) -> np.ndarray:
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    days = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[np.clip(m, 0, 12)]
    return days + ((m == 2) & leap)


def _instants(
    y: np.ndarray, mo: np.ndarray, d: np.ndarray, h: np.ndarray, mi: np.ndarray, s: np.ndarray, us: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Date and clock fields (int64 arrays, UTC) -> (micros since the epoch, valid): a real date
    and clock time within ``rows.MAX_ABS_MS`` of the epoch; NO_TS where not."""
    valid = (mo >= 1) & (mo <= 12) & (d >= 1) & (d <= _month_days(y, mo)) & (h <= 23) & (mi <= 59) & (s <= 59)
    value = _days_from_civil(y, mo, d) * MICROS_PER_DAY + (h * 3600 + mi * 60 + s) * 1_000_000 + us
    valid &= np.abs(value) <= MAX_ABS_MS * 1000
    return np.where(valid, value, NO_TS), valid


def _int(text: pa.Array, default: int = 0) -> np.ndarray:
    """Digits (from a group of the ISO match) as int64; ``default`` where the group is absent."""
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    return np.asarray(pc.fill_null(pc.cast(text, pa.int64()), default))


def _matching(text: pa.Array, pattern: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(matches ``pattern``, micros to fill, parsed to fill, the matching rows' positions)."""
    matched = np.asarray(pc.fill_null(pc.match_substring_regex(text, pattern), False))
    return matched, np.full(len(text), NO_TS, np.int64), np.zeros(len(text), bool), np.flatnonzero(matched)


def iso_micros(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Trimmed ISO-8601 text (``rows.ISO_PATTERN``) -> (micros since the epoch, parsed): a real
    date and clock time, naive as UTC, a zone Z or +-hh:mm within 18:00, the fraction truncated to
    the microsecond; as Spark's cast in a UTC session reads the same text."""
    _, micros, ok, at = _matching(text, ISO_NAMED)
    if not len(at):
        return micros, ok
    parts = pc.extract_regex(text.take(pa.array(at)), ISO_NAMED)
    y, mo, d, h, mi, s = (_int(parts.field(name)) for name in _PARTS[:6])
    # the fraction: its first six digits, padded, are the microseconds (the rest truncated)
    fraction = pc.utf8_rpad(parts.field("fraction"), 6, "0")
    us = _int(pc.utf8_slice_codeunits(fraction, 0, 6))
    zone = parts.field("zone")  # "", "Z" or +-hh:mm (hours and minutes 0 unless an offset)
    zh, zm = _int(pc.utf8_slice_codeunits(zone, 1, 3)), _int(pc.utf8_slice_codeunits(zone, 4, 6))
    sign = np.where(np.asarray(pc.equal(pc.utf8_slice_codeunits(zone, 0, 1), "-")), -1, 1)
    value, valid = _instants(y, mo, d, h, mi, s, us - sign * (zh * 3600 + zm * 60) * 1_000_000)
    valid &= (zm <= 59) & (zh * 60 + zm <= 18 * 60)  # offsets as Spark's zones take them
    micros[at], ok[at] = np.where(valid, value, NO_TS), valid
    return micros, ok


def number_micros(text: pa.Array, ts_format: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trimmed text -> (micros, parsed, is a number): a number by the rows' grammar as epoch
    seconds or milliseconds (``rows.epoch_millis``: truncated to the millisecond), parsed when
    within ``rows.MAX_ABS_MS``. Under auto, text with a ':' is never a number."""
    number, micros, ok, at = _matching(text, NUMBER_TEXT)
    if not len(at):
        return micros, ok, number
    millis = epoch_millis(np.asarray(pc.cast(text.take(pa.array(at)), pa.float64())), ts_format)  # [k]
    held = np.abs(millis) <= MAX_ABS_MS  # NaN never: the grammar has no such text; inf is not held
    micros[at[held]] = millis[held].astype(np.int64) * 1000
    ok[at[held]] = True
    return micros, ok, number


def utc_micros(text: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trimmed text -> (micros, parsed, of the shape) for the texts in the shape logs mostly write
    (``validate.ISO_UTC``: ``2026-11-13T05:40:23.493Z``), read off the bytes at their fixed places
    (a regular expression with groups and a cast per field took 0.85 s per million rows; this
    0.25-0.35 s). Other text: not parsed here (:func:`iso_micros` reads every ISO form)."""
    shaped, micros, ok, at = _matching(text, ISO_UTC)
    if not len(at):
        return micros, ok, shaped
    n = len(text)
    offsets = np.frombuffer(text.buffers()[1], np.int32)[text.offset : text.offset + n + 1]
    data = np.frombuffer(text.buffers()[2], np.uint8)
    start, length = offsets[at].astype(np.int64), (offsets[at + 1] - offsets[at]).astype(np.int64)

    def digits(first: int, count: int) -> np.ndarray:
        value = np.zeros(len(at), np.int64)
        for k in range(first, first + count):
            value = value * 10 + data[start + k] - 48
        return value

    y, mo, d, h, mi, s = digits(0, 4), digits(5, 2), digits(8, 2), digits(11, 2), digits(14, 2), digits(17, 2)
    places = np.maximum(length - 21, 0)  # fraction digits: between the '.' at 19 and the 'Z'
    us = np.zeros(len(at), np.int64)
    for k in range(6):  # the first six, the rest truncated
        digit = data[np.minimum(start + 20 + k, len(data) - 1)].astype(np.int64) - 48
        us = us * 10 + np.where(k < places, digit, 0)
    micros[at], ok[at] = _instants(y, mo, d, h, mi, s, us)
    return micros, ok, shaped


def ts_micros(ts_raw: pa.Array, ts_format: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw time text -> (micros since the epoch, parsed), as ``validate.parse_ts`` in a UTC session."""
    return _trimmed_micros(pc.utf8_trim(ts_raw, PAD_CHAR), ts_format)


def _trimmed_micros(text: pa.Array, ts_format: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ts_micros` of text trimmed already."""
    micros, ok, number = number_micros(text, ts_format)
    if ts_format == "auto":
        fast, fast_ok, shaped = utc_micros(text)  # shaped: decided here, parsed or not
        micros, ok = np.where(shaped, fast, micros), ok | fast_ok
        rest = np.flatnonzero(~number & ~shaped)
        if len(rest):
            iso, iso_ok = iso_micros(text.take(pa.array(rest)))
            micros[rest], ok[rest] = np.where(iso_ok, iso, micros[rest]), ok[rest] | iso_ok
    return micros, ok


@dataclass(frozen=True)
class Checks:
    """What a run judges rows against: its event types, latest time and window start."""

    event_types: tuple[str, ...]
    ts_format: str
    latest: dt.datetime  # validate.run_end of the run's date (UTC, naive)
    window_start: str | None  # rows before it are marked ``outside`` (None: dt partitions did it)
    outside: str  # the mark of a row before the window

    def micros(self, at: dt.datetime) -> int:
        return (at - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)


def judge(table: pa.Table, checks: Checks) -> pa.Table:
    """Canonical raw rows (text) -> typed rows with ``reject_reason`` (the first rule of
    ``rows.REASONS`` broken; ``checks.outside`` for a valid row before the window) and
    ``event_rank``: ``validate.normalize`` then ``validate.with_reject_reason``, by column."""
    n = table.num_rows
    col = {name: table.column(name).combine_chunks() for name in table.column_names}  # flat arrays
    user, item = trimmed(col["user_id"]), trimmed(col["item_id"])
    kind = lowered(trimmed(col["event_type"]))
    ts_raw = col["ts_raw"]
    ts_text = pc.utf8_trim(ts_raw, PAD_CHAR)
    micros, parsed = _trimmed_micros(ts_text, checks.ts_format)
    blank = np.asarray(pc.fill_null(pc.equal(ts_text, ""), True))
    rank = pc.index_in(kind, value_set=pa.array(checks.event_types, pa.string()))
    rules = [
        np.asarray(pc.is_valid(col[CORRUPT])),
        np.asarray(pc.is_null(user)),
        np.asarray(pc.is_null(item)),
        blank,
        ~parsed,
        parsed & (micros < 0),
        parsed & (micros > checks.micros(checks.latest)),
        np.asarray(pc.is_null(rank)),
    ]
    reason = np.full(n, len(REASONS))  # the first broken rule's index; len: none
    for i in reversed(range(len(rules))):
        reason[rules[i]] = i
    if checks.window_start is not None:  # index len + 1: valid, but before the window
        start = checks.micros(dt.datetime.fromisoformat(checks.window_start))
        reason[(reason == len(REASONS)) & (micros < start)] = len(REASONS) + 1
    names = pa.array([*REASONS, None, checks.outside], pa.string()).take(pa.array(reason))
    ts = pa.array(micros, pa.int64(), mask=~parsed).cast(pa.timestamp("us", tz="UTC"))
    return pa.table(
        {
            "user_id": user,
            "ts": ts,
            "item_id": item,
            "event_rank": rank,
            "category": trimmed(col["category"]),
            "event_type": kind,
            "ts_raw": ts_raw,
            "dt": col["dt"],
            "reject_reason": names,
            CORRUPT: col[CORRUPT],
        }
    )


def arrival_sorted(judged: pa.Table, raw: pa.Table) -> pa.Table:
    """``judge``'s rows: the valid ones sorted by user and ``sessions.ORDER`` (time, arrival:
    file, block, row; funnel stage), then the others (rejected or outside the window), as they
    came.

    ``raw`` holds the arrival (``file``, ``block``, ``row``) and the user's hash ``h``, by which
    the rows come sorted: a user's rows are together unless two users share a hash, when the
    rows are sorted by the user's text instead."""
    valid = np.asarray(pc.is_null(judged.column("reject_reason")))
    rows = np.flatnonzero(valid)
    if not len(rows):
        return judged
    pick = pa.array(rows)
    users = judged.column("user_id").take(pick).combine_chunks()
    h = np.asarray(raw.column("h").take(pick))
    new_hash = np.ones(len(rows), bool)
    new_hash[1:] = h[1:] != h[:-1]
    new_user = np.ones(len(rows), bool)
    new_user[1:] = np.asarray(pc.fill_null(pc.not_equal(users[1:], users[:-1]), True))
    if (new_user & ~new_hash).any():  # two users under one hash: their text decides
        user_key = np.asarray(pc.rank(users, sort_keys="ascending", tiebreaker="dense")).astype(np.int64)
    else:
        user_key = np.cumsum(new_hash)  # rows come sorted by hash
    ts = np.asarray(judged.column("ts").take(pick).cast(pa.int64()))  # a valid row's is never null
    # by user, then time: one sort of one number where the two fit in it (six keys took half of
    # the pass); ties, few (copies, events of one instant), then fall to arrival and funnel stage
    span = int(ts.max()) - int(ts.min()) + 1
    if (int(user_key.max()) + 1) * span < 2**62:
        order = np.argsort(user_key * span + (ts - ts.min()), kind="stable")
    else:
        order = np.lexsort((ts, user_key))
    user_sorted, ts_sorted = user_key[order], ts[order]
    same = (user_sorted[1:] == user_sorted[:-1]) & (ts_sorted[1:] == ts_sorted[:-1])  # as the one before
    tied = np.flatnonzero(np.append(same, False) | np.append(False, same))
    if len(tied):
        run = np.cumsum(~np.append(False, same))[tied]  # each tied row's run of one user and time
        sub = order[tied]
        order[tied] = sub[np.lexsort((*_arrival_keys(judged, raw, rows[sub]), run))]
    return pa.concat_tables([judged.take(pa.array(rows[order])), judged.filter(pa.array(~valid))])


def _arrival_keys(judged: pa.Table, raw: pa.Table, rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """(funnel stage, row, block, file), last the first, for ``np.lexsort``: the order of rows
    tied in user and time, nulls first as Spark's sort puts them."""
    pick = pa.array(rows)
    files = raw.column("file").take(pick).combine_chunks().dictionary_encode()  # a few paths
    file_rank = np.argsort(np.argsort(np.array([*files.dictionary.to_pylist(), ""], dtype=object), kind="stable"))
    file_key = np.where(np.asarray(files.indices.is_valid()), file_rank[np.asarray(files.indices.fill_null(0))], -1)

    def key(column: pa.ChunkedArray) -> np.ndarray:
        return np.asarray(pc.fill_null(column.take(pick).cast(pa.int64()), NO_TS))

    return key(judged.column("event_rank")), key(raw.column("row")), key(raw.column("block")), file_key
