"""Validation: every raw row either passes or gets exactly one reject reason.

Reasons are checked in a fixed order and the first that applies wins, so counts per reason add
up to the number of rejected rows. "Future" is judged against the run's date (not the wall
clock), so re-running an old date rejects the same rows.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from interest.etl.ingest import CORRUPT, INGEST_ORDER
from interest.rows import EPOCH_MS_FROM, ISO_PATTERN, MAX_ABS_MS, NUMBER_PATTERN, PAD_CHAR, REASONS

# Added after validation, on rows that were valid.
BOT_EXCLUDED = "bot_user"
BOT_CAPPED = "bot_cap"


# ISO-8601 in UTC as logs and our own canonical rendering write it: the 'Z' is the only zone
ISO_UTC = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]{1,9})?Z$"
UTC_NAMES = {"UTC", "ETC/UTC", "GMT", "ETC/GMT", "Z", "+00:00", "UCT", "ZULU"}  # session zones equal to UTC


def parse_ts(ts_raw: Column, ts_format: str, utc_session: bool = False) -> Column:
    """The raw text of a timestamp -> TimestampType, null when it does not parse or lies beyond
    ``rows.MAX_ABS_MS`` of the epoch.

    ``utc_session``: the session's time zone is UTC, so text of the ISO_UTC shape is cast without
    its 'Z' (the same instant: what the cast reads as its zone is UTC either way). Spark parses a
    zone by two regular expressions and a ``ZoneId`` lookup per row, 60 % of the whole cast at
    10M events; the shape is checked with one regular expression, and any other text (a zone of
    its own, an hour without seconds, ...) takes the plain cast.

    One expression, for a few rows; :func:`normalize` parses a frame's texts in three projections
    of the same parts (``_ts_readings``, ``_ts_of``, ``_in_range``): Spark evaluates an expression
    in a condition and again in the value it guards, so one expression reads every text several
    times.
    """
    return _in_range(_ts_of(*_ts_readings(ts_raw, ts_format, utc_session), ts_format))


def _ts_readings(ts_raw: Column, ts_format: str, utc_session: bool) -> tuple[Column | None, Column | None]:
    """(number, time): the text read as a number (double) and as a time (ISO, or ``ts_format``);
    None where the format has no such reading."""
    text = trim_text(ts_raw)
    if ts_format in ("epoch_s", "epoch_ms"):
        return _number(text), None
    if ts_format != "auto":
        return None, F.to_timestamp(text, ts_format)
    # ISO-8601 (what a timestamp column was rendered as, too); bare numbers are epoch s/ms.
    # Text with a ':' is never a number: not asking Spark to cast it skips a parse that fails
    # by exception on every row, which was half the cost of validation.
    iso = F.when(text.rlike(ISO_TEXT), text.cast("timestamp"))
    if utc_session:
        # the shape has one 'Z', at the end: dropping it by search and copy takes a third of
        # what a substring does (which counts the text's characters twice)
        without_zone = F.replace(text, F.lit("Z"), F.lit(""))
        iso = F.when(text.rlike(ISO_UTC), without_zone.cast("timestamp")).otherwise(iso)
    return F.when(~text.contains(":"), _number(text)), iso


def _ts_of(number: Column | None, time: Column | None, ts_format: str) -> Column:
    """The time of :func:`_ts_readings`: a number as epoch seconds or milliseconds, else the time."""
    if number is None:
        assert time is not None
        return time
    if ts_format == "epoch_s":
        millis = number * 1000
    elif ts_format == "epoch_ms":
        millis = number
    else:  # auto: seconds below EPOCH_MS_FROM in absolute value
        millis = F.when(F.abs(number) < EPOCH_MS_FROM, number * 1000).otherwise(number)
    parsed = _from_millis(millis)  # bounded already
    return parsed if time is None else F.when(number.isNotNull(), parsed).otherwise(time)


# the rows' grammar (interest.rows), whole text: Spark's casts also read forms of their own
# ('1.5d', '0x1p3', 'Infinity', '2026-11-13T05:40:23UTC') that request time and the graph do not
NUMBER_TEXT = f"^{NUMBER_PATTERN}$"
ISO_TEXT = f"^{ISO_PATTERN}$"


def _number(text: Column) -> Column:
    """Text -> double, null where it is no number by the rows' grammar."""
    return F.when(text.rlike(NUMBER_TEXT), text.cast("double"))


def _from_millis(millis: Column) -> Column:
    """Epoch milliseconds (double) -> timestamp, truncated; null out of ``rows.MAX_ABS_MS`` (where
    ``timestamp_millis`` would overflow a long and fail the whole job on one row)."""
    return F.when(F.abs(millis) <= MAX_ABS_MS, F.timestamp_millis(millis.cast("long")))


def _in_range(ts: Column) -> Column:
    """A parsed time, null beyond ``rows.MAX_ABS_MS`` of the epoch (request time cannot hold it)."""
    return F.when(F.abs(F.unix_micros(ts)) <= MAX_ABS_MS * 1000, ts)


def trim_text(c: Column) -> Column:
    """Trimmed of ``rows.PAD_CHAR`` at both ends (Spark's plain trim removes spaces only)."""
    return F.trim(c) if PAD_CHAR == " " else F.btrim(c, F.lit(PAD_CHAR))


def is_utc(zone: str) -> bool:
    """Whether a session time zone setting names UTC (others, e.g. an offset of +00:00 spelled
    differently, only cost the faster parse of ``parse_ts``)."""
    return zone.strip().upper() in UTC_NAMES


def run_end(date: str, max_future_skew_minutes: int) -> dt.datetime:
    """The latest event time accepted for a run on ``date`` (end of that day plus skew), in UTC."""
    day = dt.datetime.fromisoformat(date)
    return day + dt.timedelta(days=1, minutes=max_future_skew_minutes)


def _blank_to_null(c: Column) -> Column:
    trimmed = trim_text(c)
    return F.when(trimmed == "", None).otherwise(trimmed)


def normalize(df: DataFrame, ts_format: str) -> DataFrame:
    """Trim ids, blank -> null, lower-case event types, parse ``ts`` (canonical raw -> typed)."""
    utc_session = is_utc(df.sparkSession.conf.get("spark.sql.session.timeZone") or "")
    number, time = _ts_readings(F.col("ts_raw"), ts_format, utc_session)
    readings = {name: r for name, r in (("_ts_number", number), ("_ts_time", time)) if r is not None}
    read = df.select(
        _blank_to_null(F.col("user_id")).alias("user_id"),
        _blank_to_null(F.col("item_id")).alias("item_id"),
        F.lower(_blank_to_null(F.col("event_type"))).alias("event_type"),
        "ts_raw",
        *[reading.alias(name) for name, reading in readings.items()],
        _blank_to_null(F.col("category")).alias("category"),
        "dt",
        CORRUPT,
        INGEST_ORDER,
    )
    # parse_ts in three projections, each reading what the one before computed once: Spark keeps
    # them apart because each reads a costly column twice (an ISO text was matched, copied and
    # cast twice, a number matched up to five times: 1-3 s at 10M events)
    column = {name: F.col(name) for name in readings}
    timed = read.withColumn("ts", _ts_of(column.get("_ts_number"), column.get("_ts_time"), ts_format))
    bounded = timed.withColumn("ts", _in_range(F.col("ts")))
    return bounded.select("user_id", "item_id", "event_type", "ts_raw", "ts", "category", "dt", CORRUPT, INGEST_ORDER)


def with_reject_reason(df: DataFrame, event_types: list[str], latest: dt.datetime) -> DataFrame:
    """Add ``reject_reason`` (null for a valid row): the first rule in REASONS that the row breaks."""
    latest_lit = F.lit(latest.strftime("%Y-%m-%d %H:%M:%S")).cast("timestamp")
    epoch = F.lit("1970-01-01 00:00:00").cast("timestamp")
    ts_blank = F.col("ts_raw").isNull() | (trim_text(F.col("ts_raw")) == "")
    rules = [
        ("malformed_line", F.col(CORRUPT).isNotNull()),
        ("null_user_id", F.col("user_id").isNull()),
        ("null_item_id", F.col("item_id").isNull()),
        ("null_ts", ts_blank),
        ("unparseable_ts", F.col("ts").isNull()),
        ("negative_ts", F.col("ts") < epoch),
        ("future_ts", F.col("ts") > latest_lit),
        ("unknown_event_type", F.col("event_type").isNull() | ~F.col("event_type").isin(*event_types)),
    ]
    assert tuple(name for name, _ in rules) == REASONS  # the order every path checks them in
    reason = F.lit(None).cast("string")
    for name, broken in reversed(rules):
        reason = F.when(broken, F.lit(name)).otherwise(reason)
    return df.withColumn("reject_reason", reason)


def rejects_view(df: DataFrame) -> DataFrame:
    """Rows with a reason, in the quarantine layout: the raw values as seen, the reason, the line
    (null for rows that parsed, and for frames past parsing, such as the bot rejects)."""
    raw_line = F.col(CORRUPT) if CORRUPT in df.columns else F.lit(None).cast("string")
    return df.where(F.col("reject_reason").isNotNull()).select(
        "user_id",
        "item_id",
        "event_type",
        "ts_raw",
        "category",
        F.col("dt").alias("source_dt"),
        "reject_reason",
        raw_line.alias("raw_line"),
    )
