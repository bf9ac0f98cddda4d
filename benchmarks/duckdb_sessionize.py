"""The sessionize stage's work as one DuckDB SQL script: the single-node yardstick.

It does what ``jobs/sessionize.py`` does to the same raw Parquet files, with the same rules and
the same configuration: validation with the first broken rule as the reason, exact duplicates
collapsed, bot users excluded (busiest day above the limit), sessions cut at the idle gap, every
``MAX_SESSION_EVENTS`` events and every ``MAX_SESSION_MINUTES``, consecutive repeats of an item in
a session merged into one step, the frequency-ordered vocabulary over training steps, each user's
latest ``max_len`` steps as padded arrays (items, funnel stages, time-gap buckets, sessions) plus
the held-out targets, the sessions table, the day's steps and the rejects, written as Parquet.
Ties in time follow the rows' order in the files (file, then row), as ``ingest_order`` does.

It is a benchmark yardstick, not a second implementation to maintain: ``benchmarks/sessionize.py``
runs it next to the real job on the same files and compares the outputs row by row
(:func:`compare`).
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from interest.config import Config
from interest.etl.sessions import MAX_SESSION_EVENTS, MAX_SESSION_MINUTES
from interest.etl.validate import run_end
from interest.schema import HELD_OUT_STEPS, MIN_TRAIN_STEPS, TIME_GAP_EDGES_S


def _funnel_rank(event_types: list[str]) -> str:
    cases = " ".join(f"WHEN '{name}' THEN {i}" for i, name in enumerate(event_types))
    return f"CASE event_type {cases} END"


def _gap_bucket(gap: str) -> str:
    """``sessions.time_gap_bucket`` as a CASE: 1 for a first step, else 2 + the edges below."""
    cases = " ".join(f"WHEN {gap} <= {float(e)} THEN {i + 2}" for i, e in enumerate(TIME_GAP_EDGES_S))
    return f"CASE WHEN {gap} IS NULL THEN 1 {cases} ELSE {len(TIME_GAP_EDGES_S) + 2} END"


def window_files(raw_dir: Path, start: dt.date, end: dt.date) -> list[str]:
    """The window's raw files in path order (the order ``ingest_order`` breaks ties in time by)."""
    files = []
    for path in sorted(raw_dir.glob("dt=*/*.parquet"), key=str):
        day = dt.date.fromisoformat(path.parent.name.removeprefix("dt="))
        if start <= day <= end:
            files.append(str(path))
    return files


def _padded(values: str, n: str, max_len: int) -> str:
    """The latest ``max_len`` of a list, left-padded with 0."""
    return (
        f"list_concat(list_resize([]::INTEGER[], greatest({max_len} - {n}, 0), 0), "
        f"{values}[greatest({n} - {max_len} + 1, 1):])"
    )


def script(cfg: Config, files: list[str], out: str, date: str) -> str:
    """The SQL for ``date`` over the window's Parquet ``files`` (path order), writing under ``out``.

    Written for speed (profiled with ``EXPLAIN ANALYZE``): each file's position is a number
    (``file_index``), so arrival order is one BIGINT and no file name travels with the rows; and
    the per-user walk (sessions, their caps, merged repeats, step numbers and gaps) takes three
    window passes over one order instead of seven sorts over differing partitions: the event that
    starts a base session and its time are running maxima, a time cap crossing is read off the
    previous event's time, and the session and step counters are running sums.
    """
    s = cfg.sessionize
    end = dt.date.fromisoformat(date)
    latest = run_end(date, s.max_future_skew_minutes).strftime("%Y-%m-%d %H:%M:%S")
    since = run_end((end - dt.timedelta(days=1)).isoformat(), s.max_future_skew_minutes).strftime("%Y-%m-%d %H:%M:%S")
    types = ", ".join(f"'{t}'" for t in s.event_types)
    gap_s = s.session_gap_minutes * 60
    span_s = MAX_SESSION_MINUTES * 60
    return f"""
SET TimeZone = 'UTC';
CREATE TEMP TABLE flagged AS
WITH raw AS (
  SELECT user_id, item_id, event_type, ts, category, (file_index << 32) + file_row_number AS ord
  FROM read_parquet({files!r}, file_row_number = true)
), cleaned AS (
  SELECT NULLIF(trim(user_id), '') AS user_id, NULLIF(trim(item_id), '') AS item_id,
         lower(NULLIF(trim(event_type), '')) AS event_type, ts AS ts_raw,
         NULLIF(trim(category), '') AS category, ord, TRY_CAST(trim(ts) AS DOUBLE) AS num
  FROM raw
), typed AS (
  SELECT *, CASE WHEN num IS NOT NULL
                 THEN make_timestamp(CAST(CASE WHEN abs(num) < 1e11 THEN num * 1000 ELSE num END AS BIGINT) * 1000)
                 ELSE CAST(TRY_CAST(trim(ts_raw) AS TIMESTAMPTZ) AS TIMESTAMP) END AS ts
  FROM cleaned
)
SELECT user_id, item_id, event_type, ts_raw, ts, category, ord, CASE
    WHEN user_id IS NULL THEN 'null_user_id'
    WHEN item_id IS NULL THEN 'null_item_id'
    WHEN ts_raw IS NULL OR trim(ts_raw) = '' THEN 'null_ts'
    WHEN ts IS NULL THEN 'unparseable_ts'
    WHEN ts < TIMESTAMP '1970-01-01 00:00:00' THEN 'negative_ts'
    WHEN ts > TIMESTAMP '{latest}' THEN 'future_ts'
    WHEN event_type IS NULL OR event_type NOT IN ({types}) THEN 'unknown_event_type'
  END AS reject_reason
FROM typed;

CREATE TEMP TABLE cleaned AS
WITH deduped AS (
  SELECT user_id, item_id, event_type, ts, min(category) AS category, min(ord) AS ord, count(*) AS copies
  FROM flagged WHERE reject_reason IS NULL
  GROUP BY user_id, item_id, event_type, ts
), per_day AS (
  SELECT user_id, max(n) AS busiest
  FROM (SELECT user_id, CAST(ts AS DATE) AS d, count(*) AS n FROM deduped GROUP BY ALL) GROUP BY user_id
)
SELECT d.*, {_funnel_rank(s.event_types)} AS event_rank,
       CASE WHEN b.busiest > {s.bot_max_events_per_day} THEN 'bot_user' END AS reject_reason
FROM deduped d JOIN per_day b USING (user_id);

CREATE TEMP TABLE events AS
WITH walk AS (  -- pass 1: the user's order, and each event's predecessor
  SELECT user_id, item_id, event_rank, category, ts, epoch(ts) AS t,
         row_number() OVER w AS rn, lag(epoch(ts)) OVER w AS prev_t, lag(item_id) OVER w AS prev_item
  FROM cleaned WHERE reject_reason IS NULL
  WINDOW w AS (PARTITION BY user_id ORDER BY ts, ord, event_rank)
), based AS (  -- pass 2: where the event's base session (cut at the idle gap) began
  SELECT *, max(CASE WHEN prev_t IS NULL OR t - prev_t >= {gap_s} THEN rn END) OVER u AS base_rn,
            max(CASE WHEN prev_t IS NULL OR t - prev_t >= {gap_s} THEN t END) OVER u AS base_t
  FROM walk WINDOW u AS (PARTITION BY user_id ORDER BY rn ROWS UNBOUNDED PRECEDING)
), cut AS (  -- a session starts at a base, every {MAX_SESSION_EVENTS}th event, every {MAX_SESSION_MINUTES:g} minutes
  SELECT *, rn = base_rn OR (rn - base_rn) % {MAX_SESSION_EVENTS} = 0
            OR floor((t - base_t) / {span_s}) <> floor((prev_t - base_t) / {span_s}) AS starts_session
  FROM based
), runs AS (
  SELECT *, starts_session OR item_id <> prev_item AS starts_step FROM cut
)
SELECT user_id, item_id, event_rank, category, ts, t, rn, starts_step,  -- pass 3: counters
       sum(starts_session::INTEGER) OVER u AS session_idx, sum(starts_step::INTEGER) OVER u AS step_no,
       max(CASE WHEN starts_step THEN t END) OVER (PARTITION BY user_id ORDER BY rn
                                                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_step_t
FROM runs WINDOW u AS (PARTITION BY user_id ORDER BY rn ROWS UNBOUNDED PRECEDING);

CREATE TEMP TABLE steps AS
WITH merged AS (
  SELECT user_id, step_no, any_value(session_idx) AS session_idx, any_value(item_id) AS item_id,
         min(ts) AS ts, max(ts) AS end_ts, max(event_rank) AS event_rank, min(category) AS category,
         count(*) AS n_events, min(CASE WHEN starts_step THEN t - prev_step_t END) AS gap_s
  FROM events GROUP BY user_id, step_no
), counted AS (SELECT user_id, max(step_no) AS n FROM merged GROUP BY user_id)
SELECT m.*, {_gap_bucket("gap_s")} AS time_gap_bucket, c.n,
       c.n >= {MIN_TRAIN_STEPS} AND m.step_no > c.n - {HELD_OUT_STEPS} AS held_out
FROM merged m JOIN counted c USING (user_id);

CREATE TEMP TABLE vocab AS
SELECT CAST(row_number() OVER (ORDER BY count(*) DESC, item_id) + 1 AS INTEGER) AS item_idx, item_id,
       count(*) AS count
FROM steps WHERE NOT held_out
GROUP BY item_id HAVING count(*) >= {s.min_item_count};

COPY (
  WITH users AS (
    SELECT user_id, list(struct_pack(i := coalesce(v.item_idx, 1), e := event_rank + 1, g := time_gap_bucket,
                                     s := session_idx) ORDER BY step_no) AS steps,
           count(*) AS n_steps, sum(n_events) AS n_events, count(DISTINCT session_idx) AS n_sessions,
           max(ts) AS last_ts, list_sort(list_distinct(list(coalesce(v.item_idx, 1)))) AS history_idx
    FROM steps LEFT JOIN vocab v USING (item_id) GROUP BY user_id
  ), lists AS (
    SELECT *, list_transform(steps, lambda x: x.i) AS items FROM users
  )
  SELECT user_id,
         {_padded("items", "n_steps", s.max_len)} AS item_idx,
         {_padded("list_transform(steps, lambda x: x.e)", "n_steps", s.max_len)} AS event_type_idx,
         {_padded("list_transform(steps, lambda x: x.g)", "n_steps", s.max_len)} AS time_gap_bucket,
         {_padded("list_transform(steps, lambda x: x.s)", "n_steps", s.max_len)} AS session_idx,
         n_steps, n_events, n_sessions, last_ts,
         CASE WHEN n_steps >= {MIN_TRAIN_STEPS} THEN items[n_steps - 1] END AS valid_item_idx,
         CASE WHEN n_steps >= {MIN_TRAIN_STEPS} THEN items[n_steps] END AS test_item_idx, history_idx
  FROM lists
) TO '{out}/sequences' (FORMAT parquet, PER_THREAD_OUTPUT true);
COPY (SELECT * FROM vocab ORDER BY item_idx) TO '{out}/vocab.parquet' (FORMAT parquet);
COPY (SELECT user_id, session_idx, min(ts) AS start_ts, max(end_ts) AS end_ts, sum(n_events) AS n_events,
             count(DISTINCT item_id) AS n_items, epoch(max(end_ts)) - epoch(min(ts)) AS duration_s
      FROM steps GROUP BY user_id, session_idx) TO '{out}/sessions' (FORMAT parquet, PER_THREAD_OUTPUT true);
COPY (SELECT user_id, list(item_id ORDER BY step_no) AS items FROM steps
      WHERE ts > TIMESTAMP '{since}' AND ts <= TIMESTAMP '{latest}' GROUP BY user_id)
  TO '{out}/day.parquet' (FORMAT parquet);
COPY (SELECT user_id, item_id, event_type, ts_raw, category, reject_reason FROM flagged
      WHERE reject_reason IS NOT NULL
      UNION ALL
      SELECT user_id, item_id, event_type, NULL, category, reject_reason FROM cleaned
      WHERE reject_reason IS NOT NULL) TO '{out}/rejects.parquet' (FORMAT parquet);
"""


def run(cfg: Config, raw_dir: Path, out: Path, date: str, threads: int = 2) -> tuple[float, dict[str, int]]:
    """Run the script with ``threads`` threads; returns (seconds, counts to compare with the job)."""
    import duckdb  # benchmark extras only

    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"threads": threads, "temp_directory": str(out / "tmp")})
    started = time.perf_counter()
    s = cfg.sessionize
    end = dt.date.fromisoformat(date)
    start = end - dt.timedelta(days=s.lookback_days - 1) if s.lookback_days > 0 else dt.date(1, 1, 1)
    con.execute(script(cfg, window_files(raw_dir, start, end), str(out), date))
    seconds = time.perf_counter() - started
    counts = {
        "rows_in": con.execute("SELECT count(*) FROM flagged").fetchone()[0],
        "events_kept": con.execute("SELECT count(*) FROM events").fetchone()[0],
        "steps": con.execute("SELECT count(*) FROM steps").fetchone()[0],
        "users": con.execute("SELECT count(DISTINCT user_id) FROM steps").fetchone()[0],
        "vocab_items": con.execute("SELECT count(*) FROM vocab").fetchone()[0],
    }
    con.close()
    return seconds, counts


SEQUENCE_COLUMNS = ["item_idx", "event_type_idx", "time_gap_bucket", "session_idx", "history_idx"]
SCALAR_COLUMNS = ["n_steps", "n_events", "n_sessions", "last_ts", "valid_item_idx", "test_item_idx"]


def compare(job: dict[str, str], out: Path) -> dict[str, tuple[int, int, int]]:
    """The job's outputs (its summary's ``outputs``) against the script's, row by row: for each
    output, (rows equal in every column, rows in the job's, rows in the script's)."""
    import duckdb

    con = duckdb.connect()
    same = " AND ".join(
        [f"j.{c}::BIGINT[] = d.{c}::BIGINT[]" for c in SEQUENCE_COLUMNS]
        + [f"j.{c} IS NOT DISTINCT FROM d.{c}" for c in SCALAR_COLUMNS]
    )
    checks = {
        "sequences": (f"{job['infer']}/*.parquet", f"{out}/sequences/*.parquet", "user_id", same),
        "vocab": (
            f"{job['vocab']}/*.parquet",
            f"{out}/vocab.parquet",
            "item_id",
            "j.item_idx = d.item_idx AND j.count = d.count",
        ),
        "sessions": (
            f"{job['sessions']}/*.parquet",
            f"{out}/sessions/*.parquet",
            "user_id, session_idx",
            "j.start_ts = d.start_ts AND j.end_ts = d.end_ts AND j.n_events = d.n_events "
            "AND j.n_items = d.n_items AND j.duration_s = d.duration_s",
        ),
        "day": (f"{job['day']}/*.parquet", f"{out}/day.parquet", "user_id", "j.items = d.items"),
    }
    result: dict[str, tuple[int, int, int]] = {}
    for name, (left, right, keys, equal) in checks.items():
        n_job, n_duck, n_same = con.execute(
            f"""SELECT (SELECT count(*) FROM read_parquet('{left}')), (SELECT count(*) FROM read_parquet('{right}')),
                       (SELECT count(*) FROM read_parquet('{left}') j JOIN read_parquet('{right}') d USING ({keys})
                        WHERE {equal})"""
        ).fetchone()
        result[name] = (n_same, n_job, n_duck)
    con.close()
    return result


def main() -> None:
    import argparse
    import json

    from interest.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", required=True, help="the raw events folder (dt=... partitions of Parquet)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--date", required=True)
    parser.add_argument("--conf", default="conf/local.yaml")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    seconds, counts = run(load_config(args.conf), Path(args.raw), Path(args.out), args.date, args.threads)
    print(json.dumps({"seconds": seconds, **counts}))


if __name__ == "__main__":
    main()
