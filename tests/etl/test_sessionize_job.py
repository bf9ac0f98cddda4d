"""The sessionize stage end to end on generated logs (all formats) and, when present, ml-100k."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import types as T

from interest.etl.ingest import IngestError
from interest.etl.lookback import read_window
from interest.etl.sessionize import SessionizeError, run_sessionize
from interest.etl.summary import Window, format_summary
from interest.layout import Layout
from interest.spark import job_group
from interest.synth import BAD_KINDS, MALFORMED, generate

from conftest import ML100K, ROOT, make_config, make_generator

DATE = "2026-11-26"
SMALL = [
    "generator.users=300",
    "generator.items=200",
    "generator.categories=8",
    "generator.days=4",
    "generator.bot_share=0.01",
    "generator.bad_row_rate=0.01",
    "generator.duplicate_rate=0.01",
    "sessionize.min_row_groups=3",
]


def generated(tmp_path: Path, fmt: str, *extra: str):
    sets = [*SMALL, f"generator.format={fmt}", f"ingest.format={fmt}", *extra]
    cfg = make_config(tmp_path, *sets)
    planted = generate(make_generator(*sets), cfg.paths.raw_events, cfg.paths.truth, progress=False)
    return cfg, planted


@pytest.mark.parametrize("fmt", ["parquet", "json", "csv"])
def test_every_row_is_accounted_for(spark, tmp_path, fmt, fault_matrix):
    cfg, planted = generated(tmp_path, fmt)
    summary = run_sessionize(spark, cfg, DATE)
    assert summary.rows_in == planted.events
    for reason in BAD_KINDS:
        assert summary.rejected.get(reason, 0) == planted.counts[reason], reason
    assert summary.rejected.get("malformed_line", 0) == planted.counts[MALFORMED]
    assert summary.duplicates_removed == planted.counts["duplicates"]
    assert summary.accounted and summary.rows_in == (
        summary.rejected_total + summary.duplicates_removed + summary.events_kept
    )
    # bots: exactly the planted bots are excluded, and none of them has a sequence
    truth = pd.read_parquet(Path(cfg.paths.truth) / "users.parquet")
    bots = set(truth.loc[truth.is_bot, "user_id"])
    rejects = pd.read_parquet(summary.outputs.rejects)
    assert bots and set(rejects.loc[rejects.reject_reason == "bot_user", "user_id"]) == bots
    assert len(rejects) == summary.rejected_total
    infer = pd.read_parquet(summary.outputs.infer)
    assert not bots & set(infer.user_id)
    assert infer.user_id.is_unique and len(infer) == summary.users
    assert infer.n_events.sum() == summary.events_kept
    if fmt != "parquet":
        torn = rejects[rejects.reject_reason == "malformed_line"]
        assert torn.raw_line.notna().all()
    if fmt != "parquet":
        fault_matrix(f"malformed lines in {fmt}", runs=1)  # counted against the planted counts, not compared


def test_outputs_are_shardable_and_well_formed(spark, tmp_path):
    cfg, _ = generated(tmp_path, "parquet")
    summary = run_sessionize(spark, cfg, DATE)
    files = sorted(Path(summary.outputs.train).glob("*.parquet"))
    assert len(files) >= 3
    assert all(pq.ParquetFile(f).num_row_groups == 1 for f in files)
    train = pd.read_parquet(summary.outputs.train)
    max_len = cfg.sessionize.max_len
    assert (train.n_steps >= 3).all() and len(train) == summary.train_users
    for col in ("item_idx", "event_type_idx", "time_gap_bucket", "session_idx"):
        assert train[col].map(len).eq(max_len).all()
    row = train.iloc[0]
    pad = max_len - row.length
    assert (row.item_idx[:pad] == 0).all() and (row.item_idx[pad:] > 0).all()
    assert row.item_idx[-1] == row.test_item_idx and row.item_idx[-2] == row.valid_item_idx
    vocab = pd.read_parquet(summary.outputs.vocab).sort_values("item_idx")
    assert list(vocab.item_idx) == list(range(2, 2 + len(vocab)))
    assert vocab["count"].is_monotonic_decreasing
    saved = json.loads(Path(cfg.paths.reports, "sessionize", f"dt={DATE}", "summary.json").read_text())
    assert saved["rows_in"] == summary.rows_in


def test_rerun_same_date_gives_identical_outputs(spark, tmp_path):
    cfg, _ = generated(tmp_path, "parquet")
    first = run_sessionize(spark, cfg, DATE)
    snap = {k: pd.read_parquet(getattr(first.outputs, k)) for k in ("train", "infer", "vocab")}
    tracker = spark.sparkContext.statusTracker()
    steps = [
        "read, validate, clean, steps",
        "vocabulary and sequences",
        "statistics",
        "write rejects",
        "write vocabulary",
        "write sessions",
        "write sequences",
    ]
    before = {step: set(tracker.getJobIdsForGroup(job_group("sessionize", DATE, step))) for step in steps}
    second = run_sessionize(spark, cfg, DATE)
    # every step's Spark jobs carry its label (the Spark UI says which step runs), and none after
    new = {step: set(tracker.getJobIdsForGroup(job_group("sessionize", DATE, step))) - before[step] for step in steps}
    assert all(new.values()), new
    # ... and its wall time is in the summary: the stage's profile by step
    assert set(second.step_seconds) == {*steps, "write the day's steps"}
    assert (
        all(v >= 0 for v in second.step_seconds.values()) and sum(second.step_seconds.values()) <= second.wall_s + 0.1
    )
    unlabelled = set(tracker.getJobIdsForGroup(None))
    spark.range(3).count()
    assert set(tracker.getJobIdsForGroup(None)) - unlabelled
    for key in ("rows_in", "rejected", "duplicates_removed", "events_kept", "users", "sessions"):
        assert getattr(first, key) == getattr(second, key)
    for k, before in snap.items():
        after = pd.read_parquet(getattr(second.outputs, k))
        sort = "user_id" if "user_id" in after else "item_idx"
        pd.testing.assert_frame_equal(
            before.sort_values(sort).reset_index(drop=True), after.sort_values(sort).reset_index(drop=True)
        )
    parent = Path(first.outputs.train).parent.parent
    assert [p.name for p in parent.iterdir()] == [f"dt={DATE}"]  # no staging or trash left behind


def test_lookback_window_limits_the_days_read(spark, tmp_path):
    cfg, planted = generated(tmp_path, "parquet", "sessionize.lookback_days=2")
    summary = run_sessionize(spark, cfg, DATE)
    assert summary.window == Window("2026-11-25", DATE)
    last_two = pq.read_table(cfg.paths.raw_events, filters=[("dt", ">=", "2026-11-25")])
    assert summary.rows_in == last_two.num_rows < planted.events


def test_the_window_is_read_with_its_dates_as_the_folders_text(spark, tmp_path):
    """``dt`` comes off the folder names as text (not inferred as a date and formatted back on
    every row), and the session's own setting is as it was afterwards."""
    cfg, _ = generated(tmp_path, "parquet", "sessionize.lookback_days=2")
    key = "spark.sql.sources.partitionColumnTypeInference.enabled"
    before = spark.conf.get(key)
    window = read_window(spark, cfg, Layout.of(cfg, DATE))
    assert window.rows.schema["dt"].dataType == T.StringType()
    assert sorted(r["dt"] for r in window.rows.select("dt").distinct().collect()) == ["2026-11-25", DATE]
    assert spark.conf.get(key) == before
    assert spark.read.parquet(cfg.paths.raw_events).schema["dt"].dataType == T.DateType()  # Spark's own way


def test_missing_path_and_empty_window_are_clear_errors(spark, tmp_path, fault_matrix):
    cfg = make_config(tmp_path, f"ingest.path={tmp_path / 'nowhere'}")
    with pytest.raises(IngestError, match="does not exist"):
        run_sessionize(spark, cfg, DATE)
    cfg, _ = generated(tmp_path, "parquet")
    with pytest.raises(SessionizeError, match="no raw events in the window"):
        run_sessionize(spark, cfg, "2020-01-01")
    fault_matrix("the raw path missing, or an empty window", runs=2)


def test_ties_in_time_follow_the_rows_order_in_the_file(spark, tmp_path):
    # u's last three events share a second; the file lists them zz, aa, mm. v makes every item
    # a training item (u's last two steps are held out and do not count for the vocabulary).
    lines = [
        "user_id,item_id,event_type,ts,category",
        "v,aa,view,2026-11-25T08:00:00Z,c",
        "v,mm,view,2026-11-25T08:01:00Z,c",
        "v,zz,view,2026-11-25T08:02:00Z,c",
        "v,b0,view,2026-11-25T08:03:00Z,c",
        "u,b0,view,2026-11-26T10:00:00Z,c",
        "u,zz,view,2026-11-26T10:05:00Z,c",
        "u,aa,view,2026-11-26T10:05:00Z,c",
        "u,mm,view,2026-11-26T10:05:00Z,c",
    ]
    raw = tmp_path / "raw" / "events" / f"dt={DATE}"
    raw.mkdir(parents=True)
    (raw / "part-0.csv").write_text("\n".join(lines) + "\n")
    cfg = make_config(tmp_path, "ingest.format=csv", "sessionize.min_item_count=1")
    summary = run_sessionize(spark, cfg, DATE)
    names = pd.read_parquet(summary.outputs.vocab).set_index("item_idx").item_id
    infer = pd.read_parquet(summary.outputs.infer).set_index("user_id")
    assert [names.get(i) for i in infer.loc["u"].item_idx if i > 0] == ["b0", "zz", "aa", "mm"]
    assert [names.get(i) for i in infer.loc["v"].item_idx if i > 0] == ["aa", "mm", "zz", "b0"]
    again = pd.read_parquet(run_sessionize(spark, cfg, DATE).outputs.infer).set_index("user_id")
    assert [list(x) for x in again.item_idx] == [list(x) for x in infer.item_idx]  # deterministic


def test_ties_in_time_across_files_follow_the_files_paths(spark, tmp_path):
    """Two files, one with a space in its name: w's events p and q share a second, and the file
    of p comes first by path. The later file is the bigger one, which Spark reads first (it packs
    small files into one split, biggest first): ordering by read position instead of by path
    would put q first."""
    raw = tmp_path / "raw" / "events"
    for day in ("2026-11-25", DATE):
        (raw / f"dt={day}").mkdir(parents=True)
    pd.DataFrame(
        {"user_id": ["w"], "item_id": ["p"], "event_type": ["view"], "ts": ["2026-11-25T23:59:59Z"]}
    ).to_parquet(raw / "dt=2026-11-25" / "part 0.parquet", index=False)
    pd.DataFrame(
        {
            "user_id": ["v"] * 40 + ["w", "w"],
            "item_id": ["q", "r", *[f"i{n}" for n in range(38)], "q", "r"],  # v: every item in training
            "event_type": ["view"] * 42,
            "ts": [f"2026-11-26T10:{n:02d}:00Z" for n in range(40)] + ["2026-11-25T23:59:59Z", "2026-11-26T01:00:00Z"],
        }
    ).to_parquet(raw / f"dt={DATE}" / "part-0.parquet", index=False)
    cfg = make_config(tmp_path, "sessionize.min_item_count=1", "sessionize.lookback_days=2")
    summary = run_sessionize(spark, cfg, DATE)
    names = pd.read_parquet(summary.outputs.vocab).set_index("item_idx").item_id
    infer = pd.read_parquet(summary.outputs.infer).set_index("user_id")
    assert [names.get(i) for i in infer.loc["w"].item_idx if i > 0] == ["p", "q", "r"]


def test_schema_drift_between_days_is_read_and_a_renamed_column_named(spark, tmp_path, fault_matrix):
    """``ts`` as epoch milliseconds one day, ISO text the next, and an extra column on the third:
    every row is read and kept; a day on which ``user_id`` was renamed stops the job naming it."""
    raw = tmp_path / "raw" / "events"

    def day(date: str, frame: pd.DataFrame) -> None:
        (raw / f"dt={date}").mkdir(parents=True, exist_ok=True)
        frame.to_parquet(raw / f"dt={date}" / "part-0.parquet", index=False)

    base = {"user_id": ["u", "v"], "item_id": ["a", "b"], "event_type": ["view", "view"]}
    day("2026-11-24", pd.DataFrame({**base, "ts": [1795514400000, 1795518000000]}))  # int64 epoch ms
    day("2026-11-25", pd.DataFrame({**base, "ts": ["2026-11-25T10:00:00Z", "2026-11-25T11:00:00Z"]}))
    day(DATE, pd.DataFrame({**base, "ts": ["2026-11-26T10:00:00Z", "2026-11-26T11:00:00Z"], "referrer": ["x", "y"]}))
    cfg = make_config(tmp_path, "sessionize.min_item_count=1", "sessionize.lookback_days=3")
    summary = run_sessionize(spark, cfg, DATE)
    assert summary.rows_in == 6 and summary.events_kept == 6 and summary.rejected_total == 0
    rejects = pd.read_parquet(summary.outputs.rejects)
    assert rejects.empty
    infer = pd.read_parquet(summary.outputs.infer).set_index("user_id")
    assert infer.n_events.to_dict() == {"u": 3, "v": 3}  # the epoch-ms day parsed like the ISO days
    starts = pd.read_parquet(summary.outputs.sessions).groupby("user_id").start_ts.min()
    assert str(starts["u"]).startswith("2026-11-24 10:00") and str(starts["v"]).startswith("2026-11-24 11:00")
    day(
        "2026-11-25",
        pd.DataFrame({"uid": ["u"], "item_id": ["a"], "event_type": ["view"], "ts": ["2026-11-25T10:00:00Z"]}),
    )
    with pytest.raises(
        IngestError, match=r"lack column\(s\) \['user_id'\].*another schema, e\.g\. .*dt=2026-11-25/part-0"
    ):
        run_sessionize(spark, cfg, DATE)
    fault_matrix("schema drift in the source", runs=2, rows_checked=summary.rows_in)


def test_optional_columns_may_be_absent_and_required_ones_may_not(spark, tmp_path):
    raw = tmp_path / "raw" / "events" / f"dt={DATE}"
    raw.mkdir(parents=True)
    (raw / "part-0.csv").write_text(
        "user_id,item_id,ts\nu,a,2026-11-26T10:00:00Z\nu,b,2026-11-26T10:01:00Z\nv,a,2026-11-26T11:00:00Z\n"
    )
    cfg = make_config(
        tmp_path,
        "ingest.format=csv",
        "sessionize.min_item_count=1",
        "sessionize.event_types=[click]",
    )
    summary = run_sessionize(spark, cfg, DATE)  # no event_type and no category column: no mapping needed
    assert summary.rows_in == 3 and summary.users == 2
    vocab = pd.read_parquet(summary.outputs.vocab)
    assert sorted(vocab.item_id) == ["a", "b"] and vocab.category.isna().all()
    (raw / "part-0.csv").write_text("user_id,ts\nu,2026-11-26T10:00:00Z\n")
    with pytest.raises(
        IngestError,
        match=r"raw events lack column\(s\) \['item_id'\]; present: \['dt', 'ts', "
        r"'user_id'\]\. Map them with ingest.columns",
    ):
        run_sessionize(spark, cfg, DATE)


@pytest.fixture(scope="module")
def ml100k_run(spark, tmp_path_factory, ml100k):
    cfg = make_config(
        tmp_path_factory.mktemp("ml100k"),
        f"ingest.path={ml100k / 'u.data'}",
        f"ingest.item_categories={ml100k / 'u.item'}",
        "ingest.format=movielens",
        "ingest.ts_format=epoch_s",
        "sessionize.event_types=[rate]",
        "sessionize.lookback_days=0",
        "sessionize.bot_max_events_per_day=100000",
        "sessionize.min_item_count=1",
        "sessionize.max_len=200",
    )
    summary = run_sessionize(spark, cfg, "1998-04-22")
    raw = pd.read_csv(ml100k / "u.data", sep="\t", names=["u", "i", "r", "t"], dtype=str)
    raw["t"] = raw.t.astype(int)
    vocab = pd.read_parquet(summary.outputs.vocab).sort_values("item_idx")
    return summary, raw, vocab


def test_ml100k_every_row_accounted(ml100k_run):
    summary, raw, vocab = ml100k_run
    assert summary.rows_in == 100_000 and summary.events_kept == 100_000
    assert summary.rejected_total == 0 and summary.duplicates_removed == 0
    assert summary.users == 943 and summary.train_users == 943
    # 4 of the 1,682 items are only ever someone's validation or test item: they are not
    # counted into the vocabulary (held-out steps never count) and map to unknown
    assert summary.items_seen == 1682 and summary.vocab_size == 1680
    assert summary.unknown_steps == 4
    infer = pd.read_parquet(summary.outputs.infer)
    assert infer.n_steps.sum() == 100_000
    # the test target is each user's latest rating, ties in time broken by the file's own row
    # order (a stable sort), never by item id: 415 users' last two ratings share a second
    last = raw.sort_values(["u", "t"], kind="stable").groupby("u").tail(1).set_index("u").i
    names = vocab.set_index("item_idx").item_id
    got = infer.set_index("user_id").test_item_idx.map(names)
    known = got.notna()
    assert known.sum() == 943 - 3
    assert (got[known].sort_index() == last[got[known].index].sort_index()).all()


def test_ml100k_leakage_sentinel_sits_at_its_null(ml100k_run):
    """The id-adjacency rule (no model) scores the same on our sequences as on sequences whose
    ties in time are shuffled at random: the order we produce carries no id signal. Breaking
    ties by item id moves it from ~0.18 to ~0.30 (20 null deviations)."""
    import numpy as np

    from interest.data.files import load_rows
    from interest.evaluation.leakage import id_adjacency_metrics

    summary, raw, vocab = ml100k_run
    ids = ["<pad>", "<unknown>", *vocab.item_id]
    rows = load_rows(summary.outputs.infer)
    ours = id_adjacency_metrics(ids, rows)["sampled_hr@10"]
    index = dict(zip(vocab.item_id, vocab.item_idx))
    users = [str(u) for u in rows["user_id"]]

    def rule_with_ties_by(key: np.ndarray) -> float:
        last2 = raw.assign(k=key).sort_values(["u", "t", "k"], kind="stable").groupby("u").tail(2)
        pairs = {u: list(items) for u, items in last2.groupby("u").i}
        items = np.array([[index.get(pairs[u][0], 1), index.get(pairs[u][1], 1)] for u in users])
        return id_adjacency_metrics(ids, {"item_idx": items, "history_idx": rows["history_idx"]})["sampled_hr@10"]

    null = [rule_with_ties_by(np.random.default_rng(s).permutation(len(raw))) for s in range(6)]
    mean, std = float(np.mean(null)), float(np.std(null))
    assert abs(ours - mean) <= 4 * std + 0.005, (ours, null)
    by_id = rule_with_ties_by(raw.i.to_numpy())  # the old tie-break, as a positive control
    assert by_id > mean + 0.08, (by_id, null)


@pytest.mark.slow
def test_job_cli_prints_summary_and_fails_clearly(tmp_path, fault_matrix):
    cfg_over = [
        f"paths.root={tmp_path}",
        *SMALL,
        "spark.conf={spark.ui.enabled: 'false', spark.sql.shuffle.partitions: '4'}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sets = [a for o in cfg_over for a in ("--set", o)]
    gen = subprocess.run(
        [sys.executable, "jobs/generate.py", *sets], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert gen.returncode == 0, gen.stderr
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "jobs/sessionize.py", "--date", DATE, *sets],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "all rows accounted for: True" in run.stdout and "duplicates removed" in run.stdout
    [run_log] = (tmp_path / "_logs" / "sessionize" / f"dt={DATE}").glob("*.log")  # every run gets its log file
    native = run.stderr + run_log.read_text()  # -X importtime writes to file descriptor 2, which the log file takes
    imported = {ln.rsplit("|", 1)[-1].strip() for ln in native.splitlines() if ln.startswith("import time:")}
    assert "interest.etl.sessionize" in imported and not {"tensorflow", "keras"} & imported  # ETL never loads TF
    assert "[Stage " not in native  # no console progress bars when stderr is not a terminal
    assert f"log file: {run_log}" in run.stdout and " rows in, " in run_log.read_text()
    assert "Ivy" not in run.stdout + run.stderr and "Ivy" in run_log.read_text()  # the JVM's start-up, in the file
    bad = subprocess.run(
        [sys.executable, "jobs/sessionize.py", "--date", DATE, *sets, "--set", "sessionize.max_lenn=3"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "unknown configuration key 'sessionize.max_lenn'" in bad.stderr
    missing = subprocess.run(
        [
            sys.executable,
            "jobs/sessionize.py",
            "--date",
            DATE,
            *sets,
            "--set",
            f"ingest.path={tmp_path / 'nope'}",
            "--log-file",
            str(tmp_path / "logs" / "sessionize.log"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2 and "raw events path does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    [line] = [ln for ln in missing.stderr.splitlines() if ln.startswith("error")]  # stage, date, cause, path
    assert line.startswith(f"error [sessionize dt={DATE}]: ") and str(tmp_path / "nope") in line
    trace = (tmp_path / "logs" / "sessionize.log").read_text()
    assert "Traceback" in trace and "raw events path does not exist" in trace  # the trace went to the file
    marker = tmp_path / "bug-once"
    bug = subprocess.run(  # an exception nobody foresaw: one line naming the run log, the trace in it
        [sys.executable, "jobs/sessionize.py", "--date", DATE, *sets],
        cwd=ROOT,
        env={**env, "INTEREST_FAULTS": f"raise@sessionize_start:{marker}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bug.returncode == 1 and marker.exists(), bug.stderr[-3000:]
    [line] = bug.stderr.strip().splitlines()
    found = re.fullmatch(
        rf"bug \(RuntimeError, full trace in (\S+)\) \[sessionize dt={DATE}\]: injected fault at \S+", line
    )
    assert found, line
    trace = Path(found.group(1)).read_text()
    assert "Traceback" in trace and "RuntimeError: injected fault at sessionize_start" in trace
    fault_matrix("a bug", runs=1)
    with socket.socket() as s:  # a port nothing listens on: the namenode is down
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = subprocess.run(
        [
            sys.executable,
            "jobs/nightly.py",
            "--date",
            DATE,
            *sets,
            "--set",
            f"paths.root=hdfs://127.0.0.1:{port}/interest",
            "--set",
            f"storage.webhdfs_port={port}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert down.returncode == 75, down.stderr[-2000:]  # EX_TEMPFAIL: worth a retry
    assert f"error (worth a retry) [nightly dt={DATE}]: hdfs://127.0.0.1:{port}/interest is not writable" in down.stderr
    assert "Traceback" not in down.stderr


def test_a_truncated_parquet_file_fails_naming_it_or_is_skipped_and_listed(spark, tmp_path, fault_matrix):
    cfg, _ = generated(tmp_path, "parquet")
    day = Path(cfg.paths.raw_events) / f"dt={DATE}"
    victim = sorted(day.glob("*.parquet"))[0]
    kept_rows = sum(
        pq.read_metadata(p).num_rows
        for p in Path(cfg.paths.raw_events).rglob("*.parquet")
        if p != victim and "dt=" in str(p)
    )
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # an interrupted upload
    size = victim.stat().st_size
    with pytest.raises(
        IngestError,
        match=rf"^corrupt source file .*{victim.name} \({size:,} bytes\): .*"
        r"set ingest.on_corrupt_file: skip to go on without it$",
    ):
        run_sessionize(spark, cfg, DATE)
    skip = make_config(tmp_path, *SMALL, "ingest.on_corrupt_file=skip")
    summary = run_sessionize(spark, skip, DATE)
    [skipped] = summary.skipped_files
    assert skipped.path.endswith(f"dt={DATE}/{victim.name}") and skipped.bytes == size and skipped.error
    assert summary.rows_in == kept_rows and summary.accounted  # every other row is still accounted for
    assert f"skipped file         {skipped.path}" in format_summary(summary)
    fault_matrix("a raw Parquet file cut short", runs=2)  # the other files' rows are counted, not compared


@pytest.mark.slow
def test_a_sessionize_killed_while_writing_leaves_whole_outputs_and_the_rerun_cleans_up(tmp_path, fault_matrix):
    """SIGKILL the job while it writes: every output of the date is still whole (the previous run's,
    or this run's where it was already swapped in), and the next run leaves no staging behind and
    gives exactly the clean run's outputs."""
    import signal
    import time

    sets = [
        f"paths.root={tmp_path}",
        *SMALL,
        "spark.conf={spark.ui.enabled: 'false', spark.sql.shuffle.partitions: '4'}",
    ]
    args = [a for o in sets for a in ("--set", o)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def job(*extra: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, *extra, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            **kw,
        )

    def outputs() -> dict[str, list[str]]:
        """Each output of the date as a sorted list of its rows (arrays included)."""
        names = ("sequences/dt={d}/train", "sequences/dt={d}/infer", "vocab/dt={d}", "events_rejected/dt={d}")
        frames = {name: pd.read_parquet(tmp_path / name.format(d=DATE)) for name in names}
        return {
            name: sorted(repr(tuple(row)) for row in frame.itertuples(index=False)) for name, frame in frames.items()
        }

    def leftovers() -> list[str]:
        return [str(p) for p in tmp_path.rglob("*") if p.name.startswith(("_staging-", "_trash-"))]

    for step in (["jobs/generate.py"], ["jobs/sessionize.py", "--date", DATE]):
        out, _ = (run := job(*step)).communicate(timeout=600)
        assert run.returncode == 0, out[-3000:]
    clean = outputs()
    killed = job("jobs/sessionize.py", "--date", DATE, start_new_session=True)
    deadline = time.monotonic() + 600
    while not leftovers() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert killed.poll() is None, "the job ended before it could be killed mid-write"
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert leftovers()  # it died mid-write
    assert outputs() == clean  # readers still get whole outputs
    out, _ = (again := job("jobs/sessionize.py", "--date", DATE)).communicate(timeout=600)
    assert again.returncode == 0, out[-3000:]
    assert not leftovers()
    assert outputs() == clean and all(clean.values())
    fault_matrix("killed while sessionize writes", runs=1, rows_checked=2 * sum(map(len, clean.values())))


def test_ml100k_genres_become_categories_and_segments(ml100k_run):
    """u.item's genre flags become each item's category, and the evaluation segments read them:
    checked against u.item and u.data read here with pandas."""
    import numpy as np

    from interest.data.files import load_rows
    from interest.scoring.segments import category_sets, drift_segment, history_segment
    from interest.scoring.tasks import leave_one_out

    summary, raw, vocab = ml100k_run
    items = pd.read_csv(ML100K / "u.item", sep="|", header=None, encoding="latin-1", dtype=str)
    genres = [g for g, _ in (line.split("|") for line in (ML100K / "u.genre").read_text().split()) if g]
    expected = {
        row[0]: "|".join(g for g, flag in zip(genres, row[5:24]) if flag == "1" and g != "unknown") or None
        for row in items.itertuples(index=False)
    }
    got = vocab.set_index("item_id").category
    assert got["1"] == "Animation|Children's|Comedy" and got["2"] == "Action|Adventure|Thriller"
    assert (got.fillna("-") == got.index.map(expected).fillna("-")).all()
    cats = category_sets([None, None, *vocab.category])
    test = leave_one_out(load_rows(summary.outputs.train), "test")
    bins = history_segment(test.history_len)
    per_user = raw.groupby("u").size()
    assert (bins == ">200").sum() == int((per_user - 1 > 200).sum())
    drift = drift_segment(test.inputs["item_idx"], test.targets, cats)
    # the same rule from the raw ratings: the last rating's genres against the two genres the
    # (at most 199) ratings before it hold most
    order = raw.sort_values(["u", "t"], kind="stable")
    by_user = {u: list(g.i) for u, g in order.groupby("u")}
    index = dict(zip(vocab.item_id, vocab.item_idx))
    drifting = 0
    for user, target in zip(test.user, test.targets):
        if target < 2:
            continue
        counts: dict[str, int] = {}
        for item in by_user[str(user)][-200:-1]:
            for g in (expected[item] or "").split("|"):
                if g and index.get(item, 1) >= 2:
                    counts[g] = counts.get(g, 0) + 1
        top = [g for g, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:2]]
        wanted = set((expected[by_user[str(user)][-1]] or "").split("|")) - {""}
        drifting += bool(wanted) and not wanted & set(top)
    assert int((drift == "drifting").sum()) == drifting > 100
    assert np.isin(drift, ["drifting", "steady", "unknown"]).all()


def test_item_categories_fill_events_without_one(spark, tmp_path):
    from interest.config import IngestConfig
    from interest.etl.ingest import read_item_categories, with_item_categories

    (tmp_path / "items.csv").write_text("sku,genre\na,Books\nb,Games\nb,Apps\n")
    columns = {"item_id": "sku", "category": "genre"}
    cfg = IngestConfig(format="csv", columns=columns)
    items = read_item_categories(spark, cfg, str(tmp_path / "items.csv"))
    events = spark.createDataFrame(
        [("u", "a", None), ("u", "b", None), ("u", "c", None), ("u", "a", "Kept")],
        "user_id string, item_id string, category string",
    )
    filled = with_item_categories(events, items)
    assert filled.columns == events.columns
    got = sorted(tuple(r) for r in filled.select("item_id", "category").collect())
    assert got == [("a", "Books"), ("a", "Kept"), ("b", "Apps"), ("c", None)]  # b listed twice: the smallest
    (tmp_path / "bad.csv").write_text("sku,other\na,b\n")
    with pytest.raises(IngestError, match=r"lacks column\(s\) \['genre'\]"):
        read_item_categories(spark, cfg, str(tmp_path / "bad.csv"))


MANY_FILES = [*SMALL, "generator.users_per_file=100"]  # 3 files a day


def damage(path: Path, kind: str, cut: float = 0.5) -> None:
    """Break a Parquet file as uploads and hands break them."""
    data = path.read_bytes()
    if kind == "truncate":
        path.write_bytes(data[: max(1, int(len(data) * cut))])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(bytes(np.random.default_rng(len(data)).integers(0, 256, len(data), dtype=np.uint8)))
    elif kind == "csv":  # another format under a .parquet name
        path.write_text("user_id,item_id,event_type,ts\nu1,i1,view,2026-11-26T10:00:00Z\n")
    else:
        raise ValueError(kind)


@pytest.mark.slow
def test_a_broken_first_file_of_the_first_day_is_one_line_exit_2_or_skipped(tmp_path, fault_matrix):
    """The outside probe: generated data with the first file of the first day cut to 2,000 bytes.
    Spark's schema inference would read that footer first; every footer is checked before."""
    cfg, _ = generated(tmp_path, "parquet", *MANY_FILES[len(SMALL) :])
    raw = Path(cfg.paths.raw_events)
    victim = sorted(raw.rglob("*.parquet"))[0]
    assert f"dt={sorted(p.name for p in raw.iterdir())[0][3:]}" in str(victim)  # the first day's first file
    victim.write_bytes(victim.read_bytes()[:2000])
    sets = [f"paths.root={tmp_path}", *MANY_FILES, "spark.conf={spark.ui.enabled: 'false'}"]
    cmd = [sys.executable, "jobs/sessionize.py", "--date", DATE, *[a for s in sets for a in ("--set", s)]]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, run.stderr[-3000:]
    assert len(lines) <= 3 and f"corrupt source file {victim}" in lines[-1] and "(2,000 bytes)" in lines[-1]
    skip = subprocess.run([*cmd, "--set", "ingest.on_corrupt_file=skip"], cwd=ROOT, capture_output=True, text=True)
    assert skip.returncode == 0, skip.stderr[-3000:]
    summary = json.loads(Path(cfg.paths.reports, "sessionize", f"dt={DATE}", "summary.json").read_text())
    assert [f["path"] for f in summary["skipped_files"]] == [str(victim)]
    fault_matrix("a broken first raw file of the first day (the outside probe)", runs=2)


@pytest.fixture(scope="module")
def many_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    cfg, planted = generated(root, "parquet", *MANY_FILES[len(SMALL) :])
    files = sorted(Path(cfg.paths.raw_events).rglob("*.parquet"))
    return root, files


@pytest.mark.slow
@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    pick=st.integers(0, 11), kind=st.sampled_from(["truncate", "empty", "garbage", "csv"]), cut=st.floats(0.01, 0.99)
)
def test_any_broken_file_of_any_day_is_named_or_skipped_with_every_other_row_accounted(
    spark, many_files, pick, kind, cut
):
    import shutil
    import tempfile

    root, files = many_files
    assert len(files) == 12  # 4 days of 3 files
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        shutil.copytree(root / "raw", work / "raw")
        mine = sorted((work / "raw" / "events").rglob("*.parquet"))
        victim = mine[pick]
        damage(victim, kind, cut)
        others = sum(pq.read_metadata(p).num_rows for p in mine if p != victim)
        cfg = make_config(work, *MANY_FILES)
        with pytest.raises(IngestError, match=rf"^corrupt source file {re.escape(str(victim))} \("):
            run_sessionize(spark, cfg, DATE)
        summary = run_sessionize(spark, make_config(work, *MANY_FILES, "ingest.on_corrupt_file=skip"), DATE)
        assert [f.path for f in summary.skipped_files] == [str(victim)]
        assert summary.rows_in == others and summary.accounted


def test_a_java_error_is_told_in_one_line(spark, tmp_path):
    from interest.cli import first_line

    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1" + b"\x00" * 64)
    with pytest.raises(Exception) as caught:
        spark.read.parquet(str(broken)).count()
    assert len(str(caught.value).splitlines()) > 3  # what py4j hands us: the Java trace
    line = first_line(caught.value)
    assert "\n" not in line and "\tat " not in line and len(line) <= 500
