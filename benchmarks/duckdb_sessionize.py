"""The sessionize stage's core work as one DuckDB SQL script: the single-node yardstick.

It does what ``jobs/sessionize.py`` does to the same raw Parquet files, with the same rules and
the same configuration: validation with the first broken rule as the reason, exact duplicates
collapsed, bot users excluded (busiest day above the limit), sessions cut at the idle gap, every
``MAX_SESSION_EVENTS`` events and every ``MAX_SESSION_MINUTES``, consecutive repeats of an item in
a session merged into one step, the frequency-ordered vocabulary over training steps, and each
user's latest ``max_len`` steps as padded arrays plus the held-out targets, written as Parquet.
Ties in time follow the rows' order in the files (file, then row), as ``ingest_order`` does.

It is a benchmark yardstick, not a second implementation to maintain: ``benchmarks/sessionize.py``
runs it next to the real job on the same files and compares the counts.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from interest.config import Config
from interest.etl.sessions import MAX_SESSION_EVENTS, MAX_SESSION_MINUTES
from interest.etl.validate import run_end
from interest.schema import HELD_OUT_STEPS


def _funnel_rank(event_types: list[str]) -> str:
    cases = " ".join(f"WHEN '{name}' THEN {i}" for i, name in enumerate(event_types))
    return f"CASE event_type {cases} END"


def script(cfg: Config, raw_glob: str, out: str, date: str) -> str:
    """The SQL for ``date`` over the Parquet files ``raw_glob``, writing under ``out``."""
    s = cfg.sessionize
    end = dt.date.fromisoformat(date)
    start = end - dt.timedelta(days=s.lookback_days - 1) if s.lookback_days > 0 else dt.date(1, 1, 1)
    latest = run_end(date, s.max_future_skew_minutes).strftime("%Y-%m-%d %H:%M:%S")
    types = ", ".join(f"'{t}'" for t in s.event_types)
    gap_s = s.session_gap_minutes * 60
    span_s = MAX_SESSION_MINUTES * 60
    return f"""
SET TimeZone = 'UTC';
CREATE TEMP TABLE flagged AS
WITH raw AS (
  SELECT NULLIF(trim(user_id), '') AS user_id, NULLIF(trim(item_id), '') AS item_id,
         lower(NULLIF(trim(event_type), '')) AS event_type, ts AS ts_raw,
         NULLIF(trim(category), '') AS category, filename, file_row_number,
         TRY_CAST(trim(ts) AS DOUBLE) AS num
  FROM read_parquet('{raw_glob}', hive_partitioning = true, filename = true, file_row_number = true)
  WHERE dt BETWEEN '{start}' AND '{end}'
), typed AS (
  SELECT *, CASE WHEN num IS NOT NULL
                 THEN make_timestamp(CAST(CASE WHEN abs(num) < 1e11 THEN num * 1000 ELSE num END AS BIGINT) * 1000)
                 ELSE CAST(TRY_CAST(trim(ts_raw) AS TIMESTAMPTZ) AS TIMESTAMP) END AS ts
  FROM raw
)
SELECT *, CASE
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
  SELECT user_id, item_id, event_type, ts, min(category) AS category,
         min(struct_pack(f := filename, r := file_row_number)) AS ingest_order, count(*) AS copies
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
WITH gaps AS (
  SELECT *, epoch(ts) - lag(epoch(ts)) OVER u AS gap_s
  FROM cleaned WHERE reject_reason IS NULL
  WINDOW u AS (PARTITION BY user_id ORDER BY ts, ingest_order, event_rank)
), based AS (
  SELECT *, sum(CASE WHEN gap_s IS NULL OR gap_s >= {gap_s} THEN 1 ELSE 0 END)
              OVER (PARTITION BY user_id ORDER BY ts, ingest_order, event_rank ROWS UNBOUNDED PRECEDING) AS base
  FROM gaps
), placed AS (
  SELECT *, row_number() OVER b - 1 AS pos,
         floor((epoch(ts) - min(epoch(ts)) OVER (PARTITION BY user_id, base)) / {span_s}) AS chunk
  FROM based WINDOW b AS (PARTITION BY user_id, base ORDER BY ts, ingest_order, event_rank)
), cut AS (
  SELECT *, CASE WHEN pos = 0 OR pos % {MAX_SESSION_EVENTS} = 0
                   OR chunk <> lag(chunk) OVER (PARTITION BY user_id, base ORDER BY ts, ingest_order, event_rank)
                 THEN 1 ELSE 0 END AS new
  FROM placed
)
SELECT user_id, item_id, event_rank, ts, ingest_order, category,
       sum(new) OVER (PARTITION BY user_id ORDER BY ts, ingest_order, event_rank ROWS UNBOUNDED PRECEDING)
         AS session_idx
FROM cut;

CREATE TEMP TABLE steps AS
WITH runs AS (
  SELECT *, sum(changed) OVER (PARTITION BY user_id, session_idx ORDER BY ts, ingest_order, event_rank
                               ROWS UNBOUNDED PRECEDING) AS run
  FROM (SELECT *, CASE WHEN lag(item_id) OVER (PARTITION BY user_id, session_idx
                                               ORDER BY ts, ingest_order, event_rank) = item_id
                       THEN 0 ELSE 1 END AS changed FROM events)
), merged AS (
  SELECT user_id, session_idx, min(ts) AS ts, arg_min(ingest_order, struct_pack(t := ts, o := ingest_order))
         AS ingest_order, first(item_id ORDER BY ts, ingest_order, event_rank) AS item_id,
         max(event_rank) AS event_rank, count(*) AS n_events
  FROM runs GROUP BY user_id, session_idx, run
)
SELECT *, row_number() OVER u AS step_no, epoch(ts) - lag(epoch(ts)) OVER u AS gap_s,
       count(*) OVER (PARTITION BY user_id) AS n
FROM merged WINDOW u AS (PARTITION BY user_id ORDER BY ts, ingest_order, event_rank);

CREATE TEMP TABLE vocab AS
SELECT CAST(row_number() OVER (ORDER BY count(*) DESC, item_id) + 1 AS INTEGER) AS item_idx, item_id,
       count(*) AS count
FROM steps WHERE NOT (n >= {s.min_train_steps} AND step_no > n - {HELD_OUT_STEPS})
GROUP BY item_id HAVING count(*) >= {s.min_item_count};

COPY (
  WITH indexed AS (
    SELECT s.*, coalesce(v.item_idx, 1) AS item_idx FROM steps s LEFT JOIN vocab v USING (item_id)
  ), users AS (
    SELECT user_id, list(item_idx ORDER BY step_no) AS items, list(event_rank + 1 ORDER BY step_no) AS types,
           list(session_idx ORDER BY step_no) AS sessions, count(*) AS n_steps, sum(n_events) AS n_events,
           count(DISTINCT session_idx) AS n_sessions, max(ts) AS last_ts, list_sort(list_distinct(list(item_idx)))
           AS history_idx
    FROM indexed GROUP BY user_id
  )
  SELECT user_id,
         list_concat(list_resize([]::INTEGER[], greatest({s.max_len} - n_steps, 0), 0),
                     items[greatest(n_steps - {s.max_len} + 1, 1):]) AS item_idx,
         list_concat(list_resize([]::INTEGER[], greatest({s.max_len} - n_steps, 0), 0),
                     types[greatest(n_steps - {s.max_len} + 1, 1):]) AS event_type_idx,
         list_concat(list_resize([]::INTEGER[], greatest({s.max_len} - n_steps, 0), 0),
                     sessions[greatest(n_steps - {s.max_len} + 1, 1):]) AS session_idx,
         n_steps, n_events, n_sessions, last_ts,
         CASE WHEN n_steps >= {s.min_train_steps} THEN items[n_steps - 1] END AS valid_item_idx,
         CASE WHEN n_steps >= {s.min_train_steps} THEN items[n_steps] END AS test_item_idx, history_idx
  FROM users
) TO '{out}/sequences' (FORMAT parquet, PER_THREAD_OUTPUT true);
COPY (SELECT * FROM vocab ORDER BY item_idx) TO '{out}/vocab.parquet' (FORMAT parquet);
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
    con.execute(script(cfg, f"{raw_dir}/*/*.parquet", str(out), date))
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
