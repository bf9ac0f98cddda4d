"""Distributed training as Spark barrier tasks: on a real standalone cluster via spark-submit,
resuming from a checkpoint after a worker fails, and the clear errors before launching."""

from __future__ import annotations

import re

import pytest

from interest.data.files import TrainingInputError
from interest.models.export import load_model, resolve_model_dir
from interest.training.distributed import DistributedTrainingError, reserve_port, train_on_spark
from interest.training.run import train_and_export

from conftest import DATE, PLANTED, ROOT, delta_digests, make_config

# Two workers and one worker see the same global batch, so the optimisation is the same up to the
# order of the data; on this data the test NDCG@10 of such runs differs by a few hundredths.
TOLERANCE = 0.05


@pytest.mark.slow
def test_two_workers_on_standalone_cluster_match_one_worker(standalone, planted, tmp_path):
    from standalone import package_zip

    common = [*PLANTED, "model.encoder=self_attention", "train.epochs=6"]
    sets = [
        f"paths.root={planted}",
        *common,
        "paths.models='{root}/models_dist'",
        "paths.checkpoints='{root}/ckpt_dist'",
        "spark.conf={spark.sql.shuffle.partitions: '4'}",
    ]
    args = ["--conf", "conf/local.yaml", "--date", DATE, "--workers", "2", *[a for s in sets for a in ("--set", s)]]
    run = standalone.submit("jobs/train.py", *args, py_files=package_zip(tmp_path))
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-5000:])
    assert "2 worker(s), 1 attempt(s)" in run.stdout
    assert "epoch   6/6  loss" in run.stdout  # the chief's progress, relayed to the driver
    dist = load_model(resolve_model_dir(f"{planted}/models_dist", "self_attention"))
    assert dist.metrics["workers"] == 2 and dist.metrics["steps"] > 0
    single = train_and_export(
        make_config(planted, *common, "paths.models='{root}/models_single'", "paths.checkpoints='{root}/ckpt_single'"),
        DATE,
    )
    a, b = dist.metrics["test"], single.metrics["test"]
    pop = single.metrics["popularity"]["test"]["full_ndcg@10"]
    assert abs(a["full_ndcg@10"] - b["full_ndcg@10"]) <= TOLERANCE, (a, b)
    assert a["full_ndcg@10"] > 2 * pop and b["full_ndcg@10"] > 2 * pop
    assert re.search(r"epoch +\d+/\d+  loss", standalone.executor_logs())  # the workers really ran on executors


@pytest.mark.slow
def test_a_failed_worker_resumes_from_the_checkpoint(spark, planted, log_lines, fault_matrix, monkeypatch, tmp_path):
    monkeypatch.setenv("INTEREST_FAULTS", f"raise@train_step_12:{tmp_path / 'failed'}")  # once, on one worker
    cfg = make_config(
        planted,
        *PLANTED,
        "model.encoder=memory",
        "train.workers=2",
        "train.epochs=2",
        "paths.models='{root}/models_fault'",
        "paths.checkpoints='{root}/ckpt_fault'",
    )
    lines = log_lines
    out = train_on_spark(spark, cfg, DATE)
    assert out.attempts == 2
    assert any("attempt 1 failed" in line and "injected fault at train_step_12" in line for line in lines)
    assert any("resumed from checkpoint at step 10" in line for line in out.chief_log)
    # epoch 1 ended only in the failed attempt, which returned nothing: its line reached the
    # driver because the chief streams its lines live, as it logs them
    assert not any(line.startswith("epoch   1/2") for line in out.chief_log)
    assert any(line.startswith("epoch   1/2  loss") for line in lines), lines
    assert out.metrics["resumed_from_step"] == 10 and out.metrics["workers"] == 2
    model = load_model(out.model_dir)
    steps_per_epoch = -(-model.metrics["train_rows"] // cfg.train.batch_size)
    assert model.metrics["steps"] == 2 * steps_per_epoch  # no step lost or run twice in total
    # ... and it ends where an uninterrupted run of the same training ends (the global batch is
    # the same for 1 and 2 workers, so one process is the reference)
    clean = train_and_export(
        make_config(
            planted,
            *PLANTED,
            "model.encoder=memory",
            "train.epochs=2",
            "paths.models='{root}/models_clean'",
            "paths.checkpoints='{root}/ckpt_clean'",
        ),
        DATE,
    )
    a, b = model.metrics["test"], clean.metrics["test"]
    assert abs(a["full_ndcg@10"] - b["full_ndcg@10"]) <= TOLERANCE, (a, b)
    assert abs(a["full_hr@10"] - b["full_hr@10"]) <= 2 * TOLERANCE, (a, b)
    assert a["full_ndcg@10"] > 1.5 * clean.metrics["popularity"]["test"]["full_ndcg@10"], a
    fault_matrix("a training worker killed", runs=1)


@pytest.mark.slow
def test_a_hung_worker_is_ended_by_its_watchdog_and_the_launcher_resumes(planted, tmp_path, fault_matrix):
    """A training worker hangs before step 12 (a deadlocked step): its watchdog ends it, the barrier
    stage fails, and the launcher's next attempt resumes from the checkpoint at step 10 and
    finishes the job, with no step lost or run twice."""
    import os
    import subprocess
    import sys

    from conftest import copy_planted, run_logs

    root = copy_planted(planted, None, tmp_path / "hang")
    marker = tmp_path / "hung-once"
    sets = [
        f"paths.root={root}",
        *PLANTED,
        "model.encoder=memory",
        "train.epochs=2",
        "train.workers=2",
        "train.step_timeout_s=30",
        "spark.conf={spark.ui.enabled: 'false', spark.sql.shuffle.partitions: '4'}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "INTEREST_FAULTS": f"hang@train_step_12:{marker}"}
    run = subprocess.run(
        [sys.executable, "jobs/train.py", "--date", DATE, *[a for s in sets for a in ("--set", s)]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-5000:]
    assert marker.exists()  # the fault really happened
    assert "no training step finished in 30s (at step 12" in run_logs(root, "train"), out[-5000:]  # the worker's line
    assert re.search(r"attempt 1 failed: .*exit code 75 \(its step watchdog", out), out[-5000:]
    assert "resumed from checkpoint at step 10" in out and "2 worker(s), 2 attempt(s)" in out
    model = load_model(resolve_model_dir(f"{root}/models", "memory"))
    assert model.metrics["resumed_from_step"] == 10 and model.metrics["workers"] == 2
    assert model.metrics["steps"] == 2 * -(-model.metrics["train_rows"] // 64)  # batch_size in PLANTED
    fault_matrix("a training worker that hangs", runs=1)


@pytest.mark.slow
def test_too_many_failures_stop_with_a_clear_error(spark, planted, monkeypatch, tmp_path):
    monkeypatch.setenv("INTEREST_FAULTS", f"raise@train_step_3:{tmp_path / 'failed'}")
    cfg = make_config(
        planted,
        *PLANTED,
        "train.workers=2",
        "train.epochs=1",
        "train.max_failures=0",
        "paths.models='{root}/models_fail'",
        "paths.checkpoints='{root}/ckpt_fail'",
    )
    with pytest.raises(
        DistributedTrainingError, match=r"failed 1 time\(s\).*max_failures=0.*injected fault at train_step_3"
    ):
        train_on_spark(spark, cfg, DATE)


def test_clear_errors_before_launching(spark, planted, tmp_path):
    with pytest.raises(DistributedTrainingError, match=r"needs 3 task slots .* 2 slot\(s\), 2 free"):
        train_on_spark(spark, make_config(planted, *PLANTED, "train.workers=3", "train.batch_size=63"), DATE)
    with pytest.raises(DistributedTrainingError, match="checkpoint path .* is not writable"):
        train_on_spark(
            spark,
            make_config(planted, *PLANTED, "train.workers=2", "paths.checkpoints=/proc/interest-checkpoints"),
            DATE,
        )
    with pytest.raises(TrainingInputError, match="no sequences for 2026-11-26"):
        train_on_spark(spark, make_config(tmp_path, "train.workers=2"), DATE)
    with pytest.raises(DistributedTrainingError, match="must divide evenly over 2 workers"):
        train_on_spark(spark, make_config(planted, *PLANTED, "train.workers=2", "train.batch_size=63"), DATE)


def test_reserved_ports_are_held_and_outside_the_ephemeral_range():
    from interest.training.distributed import ephemeral_range

    a, port_a = reserve_port()
    b, port_b = reserve_port()
    try:
        assert port_a != port_b
        low, _ = ephemeral_range()
        assert port_a < low and port_b < low
        import socket

        probe = socket.socket()
        with pytest.raises(OSError):
            probe.bind(("", port_a))
        probe.close()
    finally:
        a.close()
        b.close()


# The night every remote-storage test runs, and its reference on local disk: memory encoder, two
# barrier workers on the standalone cluster, and one training worker that fails once before step 12
# and resumes from the checkpoint (so remote checkpoints are written and read back).
NIGHT = [*PLANTED, "train.epochs=2", "train.workers=2", "model.encoder=memory"]
SHUFFLE = {"spark.sql.shuffle.partitions": "4"}
FIGURES = ("train_rows", "steps", "best_epoch", "resumed_from_step", "valid", "test", "popularity")
REMOTE_PREFIXES = (
    "/sequences/dt=",
    "/vocab/dt=",
    "/events_rejected/dt=",
    "/sessions/dt=",
    "/reports/sessionize/",
    "/reports/nightly/",
    f"/_logs/nightly/dt={DATE}/",  # the run's log file, written locally and copied at exit
    "/reports/tensorboard/memory/",
    "/models/memory/_serving/",  # the SavedModel of the night
    "/models/memory/_index/",  # the item index of the night
    "/warehouse/default.db/user_interest_embeddings/dt=",
    "/warehouse/default.db/item_embeddings/",
    "/warehouse/default.db/user_recommendations/",
)


def spark_conf(settings: dict[str, str]) -> str:
    """``--set spark.conf={...}``: the job's Spark settings as one YAML map."""
    return "spark.conf={" + ", ".join(f"{k}: '{v}'" for k, v in settings.items()) + "}"


def failing(work, marker: str) -> dict[str, str]:
    """One training worker fails once, before step 12 (the marker says it did)."""
    return {"spark.executorEnv.INTEREST_FAULTS": f"raise@train_step_12:{work / marker}"}


@pytest.fixture(scope="module")
def local_night(standalone, planted, tmp_path_factory):
    """The reference night on local disk (``NIGHT``), run once for every remote-storage test."""
    import shutil

    work = tmp_path_factory.mktemp("local-night")
    local = work / "root"
    shutil.copytree(planted / "raw" / "events", local / "raw" / "events")
    sets = [f"paths.root={local}", *NIGHT, spark_conf(SHUFFLE)]
    run = standalone.run_job("jobs/nightly.py", DATE, sets, work, conf=failing(work, "failed"))
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    return local


def remote_files(root: str) -> list[str]:
    """Every file under a remote root, as paths below it."""
    from interest import storage

    fs, inner = storage.fs_path(root)
    return [p[len(inner) :] for p in fs.find(inner)]


def assert_same_night(spark, remote: str, local, sequences_at: str | None = None) -> None:
    """The night at ``remote`` equals the one on local disk: the sessionize outputs row for row,
    the model's training losses and figures to the last digit, and a digest of each table's
    rows. Spark reads the remote side at ``sequences_at``/the warehouse copy when its own
    session cannot reach the remote storage."""
    from interest import storage

    where = sequences_at or remote
    for data in ("sequences/dt={}/train", "sequences/dt={}/infer", "vocab/dt={}"):  # in the order made
        got = [sorted(map(repr, spark.read.parquet(f"{w}/{data.format(DATE)}").collect())) for w in (where, local)]
        assert got[0] == got[1], data
    remote_model = load_model(resolve_model_dir(f"{remote}/models", "memory")).metrics
    local_model = load_model(resolve_model_dir(str(local / "models"), "memory")).metrics
    assert [h["loss"] for h in remote_model["history"]] == [h["loss"] for h in local_model["history"]]
    assert {k: remote_model[k] for k in FIGURES} == {k: local_model[k] for k in FIGURES}
    published = delta_digests(spark, f"{where}/warehouse", DATE, drop=("model_version",))
    assert published == delta_digests(spark, str(local / "warehouse"), DATE, drop=("model_version",))
    assert all(rows > 0 for rows, _ in published.values()), published
    assert storage.exists(f"{remote}/models/memory/LATEST")


@pytest.mark.slow
def test_nightly_on_hdfs_with_two_workers_a_failure_and_nothing_left_locally(
    spark, standalone, hdfs, planted, local_night, tmp_path
):
    """The whole nightly with paths.root on a real HDFS: sessionize, 2-worker barrier training on
    the standalone cluster with checkpoints on HDFS and one injected worker failure, embed and
    publish. Every output is on HDFS; the local disks of the driver and the workers hold none; and
    the three tables and the model's figures equal those of the same night run on local disk."""
    import os
    import tempfile
    from pathlib import Path

    from interest import storage

    storage.configure(hdfs.http_port)
    root = f"{hdfs.url}/interest"
    storage.upload(str(planted / "raw" / "events"), f"{root}/raw/events")
    temp = Path(tempfile.gettempdir())

    def scratch() -> set[str]:
        return {p.name for p in temp.glob("interest-*") if p.name != "interest-metastore"}

    before = scratch()
    sets = [f"paths.root={root}", f"storage.webhdfs_port={hdfs.http_port}", *NIGHT, spark_conf(SHUFFLE)]
    run = standalone.run_job("jobs/nightly.py", DATE, sets, tmp_path, conf=failing(tmp_path, "hdfs-failed"))
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "attempt 1 failed" in out and "injected fault at train_step_12" in out, out[-4000:]
    assert "resumed from checkpoint at step 10" in out  # read back from HDFS by the new attempt
    files = remote_files(root)
    for prefix in REMOTE_PREFIXES:
        assert any(f.startswith(prefix) for f in files), (prefix, files[:50])
    assert "/warehouse/default.db/user_interest_embeddings/_delta_log/00000000000000000001.json" in files
    models = [f for f in files if f.startswith("/models/memory/")]
    assert "/models/memory/LATEST" in models and any(f.endswith("/encoder.weights.h5") for f in models)
    assert not [f for f in files if f.startswith("/checkpoints/") and not f.endswith("/")]  # cleared when done
    # nothing of it on local disks: no scratch left in the temp directory, nothing in the working
    # directory, and in the workers' folders only Spark's logs and the application files it shipped
    assert not scratch() - before  # (an earlier test's leftovers may go meanwhile: not ours to count)
    assert not [p for p in ROOT.iterdir() if p.name.startswith(("hdfs:", "file:", "metastore_db", "derby"))]
    work = standalone.workdir / "work"
    ours = [
        p
        for p in work.rglob("*")
        if p.is_file()
        and (
            p.suffix in (".parquet", ".png", ".md") or p.name.startswith(("events.out", "ckpt-", "report.", "summary."))
        )
        and ".zip" not in str(p.relative_to(work))
    ]
    assert not ours, ours[:10]
    assert os.path.isdir(work)
    assert_same_night(spark, root, local_night)  # this session reads hdfs:// itself


@pytest.mark.slow
def test_nightly_on_s3_equals_local_and_a_lost_server_is_worth_a_retry(
    spark, standalone, planted, local_night, tmp_path
):
    """The whole nightly with paths.root on a real S3 API (moto on 127.0.0.1), as on HDFS above: the
    sequences, checkpoints, model, SavedModel, item index and Delta tables all on S3. The server
    stops in the middle of the first table's publish: the job says so in one line and exits 75,
    and a new reader sees no row of the night. Run again, the night publishes rows equal to the
    night on local disk. A bucket that does not exist is one line and exit 2."""
    import threading
    import time
    import uuid

    from interest import storage
    from interest.spark import delta_package, s3a_package

    from loopback_s3 import LoopbackS3

    with LoopbackS3() as s3:
        settings = s3.spark_conf()
        storage.configure(s3=storage.s3_options(settings))
        try:
            bucket = f"night-{uuid.uuid4().hex[:12]}"  # new each run: the embedded metastore outlives a server
            s3.create_bucket(bucket)
            root = f"s3a://{bucket}/interest"
            storage.upload(str(planted / "raw" / "events"), f"{root}/raw/events")
            sets = [f"paths.root={root}", *NIGHT, spark_conf({**SHUFFLE, **settings})]
            conf = {"spark.jars.packages": f"{s3a_package()},{delta_package()}"}
            # the driver hands its faults to the training workers: one worker fails before step 12
            # and, once the model is trained, the publish waits for the test to stop the server
            fault = failing(tmp_path, "s3-failed")["spark.executorEnv.INTEREST_FAULTS"]
            paused = tmp_path / "publish-paused"
            first: list = []
            job = threading.Thread(
                target=lambda: first.append(
                    standalone.run_job(
                        "jobs/nightly.py",
                        DATE,
                        sets,
                        tmp_path,
                        conf=conf,
                        env={"INTEREST_FAULTS": f"{fault},pause@publish_user_interest_embeddings_commit:{paused}"},
                    )
                )
            )
            job.start()
            deadline = time.monotonic() + 900
            while not paused.exists() and job.is_alive() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert paused.exists(), first[0].stdout[-6000:] if first else "no pause"
            s3.stop()  # the storage goes away between staging and the commit
            (tmp_path / "publish-paused.go").touch()
            job.join(600)
            run = first[0]
            out = run.stdout + run.stderr
            assert run.returncode == 75, out[-6000:]
            assert "resumed from checkpoint at step 10" in out, out[-6000:]  # the checkpoint was read back from S3
            errors = [line for line in out.splitlines() if line.startswith(("error", "bug"))]
            assert len(errors) == 1, errors or out[-3000:]
            assert errors[0].startswith(f"error (worth a retry) [embed dt={DATE}]: storage unreachable: "), errors

            s3.start()  # back, with what was written before it stopped
            seen = tmp_path / "after-outage"
            storage.download(f"{root}/warehouse", str(seen))
            for table in ("user_interest_embeddings", "item_embeddings", "user_recommendations"):
                rows = spark.read.format("delta").load(str(seen / "default.db" / table))
                assert rows.where(f"dt = '{DATE}'").count() == 0, table  # nothing half-published

            again = standalone.run_job("jobs/nightly.py", DATE, sets, tmp_path, conf=conf)
            assert again.returncode == 0, (again.stdout + again.stderr)[-6000:]
            assert "reused the model already trained on" in again.stdout + again.stderr
            files = remote_files(root)
            for prefix in REMOTE_PREFIXES:
                assert any(f.startswith(prefix) for f in files), (prefix, files[:50])
            assert not [f for f in files if f.startswith("/checkpoints/") and not f.endswith("/")]
            copy = tmp_path / "night-copy"  # this test's own session has no S3A: it reads a copy
            for folder in ("sequences", "vocab", "warehouse"):
                storage.download(f"{root}/{folder}", str(copy / folder))
            assert_same_night(spark, root, local_night, sequences_at=str(copy))

            missing = standalone.run_job(
                "jobs/nightly.py",
                DATE,
                ["paths.root=s3a://no-such-bucket/interest", *NIGHT, spark_conf(settings)],
                tmp_path,
                conf=conf,
            )
            lines = [
                line for line in (missing.stdout + missing.stderr).splitlines() if line.startswith(("error", "bug"))
            ]
            assert missing.returncode == 2, missing.stderr[-3000:]
            assert len(lines) == 1 and "s3a://no-such-bucket/interest is not writable" in lines[0], lines
        finally:
            storage.configure(s3={})


def test_one_rule_decides_where_training_runs(monkeypatch, tmp_path):
    from interest.training.launch import train_model, trains_on_spark

    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    assert not trains_on_spark(make_config(tmp_path))  # one worker, a local job: this process
    assert trains_on_spark(make_config(tmp_path, "train.workers=2"))
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "1")  # what spark-submit hands the Python driver
    assert trains_on_spark(make_config(tmp_path))  # on a cluster, training goes to an executor
    with pytest.raises(ValueError, match="training on Spark needs a SparkSession"):
        train_model(make_config(tmp_path), "2026-11-26")
