"""Faults in the embed job and its publish, each compared by content with clean runs of the same date."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from embed_runs import (
    FAST,
    bad_night,
    embed_job,
    finish,
    metastore_digests,
    read_back,
    table_digests,
)

from conftest import DATE, ROOT, TABLES, copy_planted, run_logs


@pytest.mark.slow
def test_a_file_url_root_runs_and_writes_only_under_it(nights):
    """The clean night A ran with ``paths.root=file://...`` (the nights fixture)."""
    table = nights.root / "warehouse" / "default.db" / "user_interest_embeddings"
    assert (table / "_delta_log").is_dir() and list((table / f"dt={DATE}").glob("*.parquet"))
    assert (nights.root / "metastore" / "metastore_db").is_dir()  # Derby got a plain local path
    assert not list(ROOT.glob("file:*")) and not (ROOT / "metastore_db").exists()


@pytest.mark.slow
def test_a_python_worker_killed_mid_inference_is_retried_and_the_tables_match_a_clean_run(
    spark, planted, planted_model, nights, tmp_path, fault_matrix
):
    """A Spark Python worker dies inside batch inference (as the kernel's OOM killer leaves it):
    Spark retries the task, the job succeeds, and the three tables equal a clean run's exactly."""
    root = copy_planted(planted, planted_model, tmp_path / "worker")
    marker = tmp_path / "worker-died"
    retried = "spark.master='local[2,2]'"  # local mode retries a failed task only when asked
    faulted = embed_job(["jobs/embed.py", "--date", DATE], root, retried, faults=f"embed_batch:{marker}")
    out, _ = faulted.communicate(timeout=900)
    assert faulted.returncode == 0, out[-3000:]
    assert marker.exists() and "Python worker exited unexpectedly" in run_logs(root)  # the fault really happened
    assert table_digests(spark, root) == nights.a
    fault_matrix("a Spark Python worker killed", runs=1, rows_checked=sum(n for n, _ in nights.a.values()))


@pytest.mark.slow
def test_an_executor_jvm_lost_mid_inference_on_the_cluster_is_retried_and_the_tables_match(
    spark, standalone, planted, planted_model, nights, tmp_path, fault_matrix
):
    """An executor JVM of the standalone cluster is killed (SIGKILL, a node gone) while its task
    runs batch inference: the master starts a new executor, Spark runs the lost work again, the
    three tables equal those of a clean run of the same date, and a new session reads them."""
    root = copy_planted(planted, planted_model, tmp_path / "executor")
    marker = tmp_path / "executor-lost"
    sets = [f"paths.root={root}", *FAST, "spark.conf={spark.sql.shuffle.partitions: '4'}"]
    lost = {"spark.executorEnv.INTEREST_FAULTS": f"kill_executor@embed_batch:{marker}"}
    faulted = standalone.run_job("jobs/embed.py", DATE, sets, tmp_path, conf=lost)
    assert faulted.returncode == 0, (faulted.stdout[-3000:], faulted.stderr[-5000:])
    assert marker.exists()  # the fault really happened ...
    assert re.search(r"Executor app-\S+ finished with state EXITED .*exited with code 137", standalone.worker_logs())
    assert "published to default.user_interest_embeddings" in faulted.stdout
    assert table_digests(spark, root) == nights.a
    # a new session reads what the cluster job published, through the metastore
    users = pd.read_parquet(root / "sequences" / f"dt={DATE}" / "infer").user_id.nunique()
    rows, seen = read_back(root, "delta")
    assert rows == f"ROWS {users} {users} [32] [1] 5"
    assert seen.endswith(f"['{planted_model.name}']"), seen
    fault_matrix("a Spark executor JVM lost", runs=1, rows_checked=sum(n for n, _ in nights.a.values()))


@pytest.mark.slow
def test_an_unreachable_metastore_is_one_retryable_line_and_publishes_nothing(nights, fault_matrix):
    """The Hive metastore does not answer (a remote metastore down): the embed job stops before
    inference with exit 75 and one line naming it, and the published tables stay as they were."""
    import socket

    root = nights.root  # night A, then B, then rolled back to A: what a reader sees is A's tables
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = embed_job(
        ["jobs/embed.py", "--date", DATE],
        root,
        "spark.conf={spark.ui.enabled: 'false', spark.hadoop.hive.metastore.uris: 'thrift://127.0.0.1:"
        + str(port)
        + "', spark.hadoop.hive.metastore.connect.retries: '1'}",
    )
    out, _ = down.communicate(timeout=900)
    assert down.returncode == 75, out[-3000:]
    [line] = [ln for ln in out.splitlines() if ln.startswith("error")]
    assert line.startswith(
        f"error (worth a retry) [embed dt={DATE}]: the Hive metastore is unreachable (thrift://127.0.0.1:{port})"
    )
    assert "Traceback" not in out and "published with model" not in out  # stopped before inference
    assert metastore_digests(root) == nights.rolled_back == nights.a
    fault_matrix("the metastore unreachable at publish", runs=1, rows_checked=sum(n for n, _ in nights.a.values()))


KILL_POINTS = [  # where a Delta publish of the users' table is killed, and the tables already new after it
    (f"{TABLES[0]}_start", ()),
    (f"{TABLES[0]}_staged", ()),
    (f"{TABLES[0]}_commit", ()),
    (f"{TABLES[0]}_committed", (TABLES[0],)),
]


@dataclass
class Nights:
    """Runs of one date on a root of their own: the planted model's night (A, given the root as a
    ``file://`` URL); another model's night for the same date (B) killed at each of
    ``KILL_POINTS``, then run whole; then ``jobs/rollback.py``. Each table's content after each."""

    root: Path
    bad: str  # the other model
    a: dict[str, tuple[int, str]]
    killed: list[tuple[str, tuple[str, ...], dict[str, tuple[int, str]]]]  # point, new tables, what a reader sees
    b: dict[str, tuple[int, str]]
    staging_left: list[str]  # files left in the users' staging folder once B published
    rollback_out: str
    rolled_back: dict[str, tuple[int, str]]


@pytest.fixture(scope="module")
def nights(spark, planted, planted_model, tmp_path_factory) -> Nights:
    """What every fault test of the embed job compares with, made once per module."""
    tmp = tmp_path_factory.mktemp("nights")
    root = copy_planted(planted, planted_model, tmp / "clean")
    bad = bad_night(planted_model, tmp / "other")
    finish(embed_job(["jobs/embed.py", "--date", DATE], f"file://{root}"))  # a URL root works as a path does
    a = table_digests(spark, root)
    killed = []
    for point, new_tables in KILL_POINTS:
        _kill_bad_night(root, bad, point, tmp)
        killed.append((point, new_tables, table_digests(spark, root)))
    finish(embed_job(["jobs/embed.py", "--date", DATE, "--model", bad], root))
    b = table_digests(spark, root)
    staging = root / "warehouse" / "default.db" / TABLES[0] / "_staging" / f"dt={DATE}"
    left = [str(p.relative_to(staging)) for p in staging.rglob("*")]
    out = finish(embed_job(["jobs/rollback.py"], root))
    return Nights(root, bad, a, killed, b, left, out, table_digests(spark, root))


def _kill_bad_night(root: Path, bad: str, point: str, tmp: Path, *extra: str) -> None:
    """Run the bad night's embed job and kill it at ``publish_<point>`` (as the kernel would)."""
    marker = tmp / f"marker-{point}"
    job = embed_job(
        ["jobs/embed.py", "--date", DATE, "--model", bad], root, *extra, faults=f"die@publish_{point}:{marker}"
    )
    finish(job, code=137)
    assert marker.exists()  # it died where it was told to


@pytest.mark.slow
def test_a_parquet_publish_killed_at_each_point_leaves_every_table_whole(
    spark, planted, planted_model, nights, tmp_path, fault_matrix
):
    """Kill the bad night's publish before the partition swap and right after it: a new reader
    sees each table as the previous night or the new one, compared by content with clean runs of
    both; the next run publishes the new night whole and removes the orphan folders."""
    users = TABLES[0]
    root = copy_planted(planted, planted_model, tmp_path / "kill")
    finish(embed_job(["jobs/embed.py", "--date", DATE], root, "embed.table_format=parquet"))
    assert metastore_digests(root) == nights.a  # the same rows as the clean Delta run
    # staged and gated is the same place as just before the swap here: nothing runs between them
    points = [(f"{users}_commit", ()), (f"{users}_committed", (users,))]
    compared = 0
    for point, new_tables in points:  # after each kill, every table is the previous night or the new one
        _kill_bad_night(root, nights.bad, point, tmp_path, "embed.table_format=parquet")
        got = metastore_digests(root)
        assert got == {t: (nights.b if t in new_tables else nights.a)[t] for t in TABLES}, point
        compared += sum(n for n, _ in got.values())
    finish(embed_job(["jobs/embed.py", "--date", DATE, "--model", nights.bad], root, "embed.table_format=parquet"))
    assert metastore_digests(root) == nights.b
    day = root / "warehouse" / "default.db" / users / f"dt={DATE}"
    assert len(list(day.iterdir())) == 1  # the killed runs' folders are gone
    fault_matrix("killed while publishing (Parquet)", runs=len(points), rows_checked=compared)


@pytest.mark.slow
def test_a_delta_publish_killed_at_each_point_then_a_bad_night_rolled_back(nights, fault_matrix):
    """Delta (the default), on the nights fixture's root: the bad night's publish killed before
    staging, after it, just before the commit and just after it. After each, every table is the
    previous night or the new one, compared by content with the clean runs of both; then the bad
    night publishes whole, and ``jobs/rollback.py`` gives all three tables back."""
    users = TABLES[0]
    assert all(nights.a[t] != nights.b[t] for t in TABLES)  # really another night
    assert [point for point, _, _ in nights.killed] == [p for p, _ in KILL_POINTS]
    for point, new_tables, got in nights.killed:
        assert got == {t: (nights.b if t in new_tables else nights.a)[t] for t in TABLES}, point
    assert not nights.staging_left  # the killed runs' staged folders are gone
    # the users' table has the bad night twice (killed after its commit, then run whole): one undo
    assert f"default.{users}: version 3 -> restored version 1" in nights.rollback_out, nights.rollback_out[-2000:]
    assert f"default.{TABLES[1]}: version 2 -> restored version 1" in nights.rollback_out
    assert nights.rolled_back == nights.a  # all three tables, by content
    compared = sum(sum(n for n, _ in got.values()) for _, _, got in nights.killed)
    compared += 2 * sum(n for n, _ in nights.a.values())
    fault_matrix("killed while publishing (Delta)", runs=len(KILL_POINTS), rows_checked=compared)
