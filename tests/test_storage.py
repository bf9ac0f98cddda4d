"""The storage layer on a real S3 API (moto on 127.0.0.1), the errors a lost server gives, and the
Spark settings that reach S3. The whole nightly on S3 is in tests/training/test_distributed.py."""

from __future__ import annotations

import threading

import pytest

from interest import faults, storage
from interest.errors import RetryableError
from interest.locks import RunLockedError, date_lock, lock_path
from interest.spark import add_package, hadoop_version, s3a_package

from loopback_s3 import LoopbackS3
from minihdfs import free_port


@pytest.fixture
def s3():
    with LoopbackS3() as server:
        storage.configure(s3=storage.s3_options(server.spark_conf()))
        try:
            server.create_bucket("bucket")
            yield server
        finally:
            storage.configure(s3={})


def test_spark_s3a_settings_become_the_storage_layers_options():
    s3a = "spark.hadoop.fs.s3a."
    conf = {
        f"{s3a}endpoint": "minio.internal:9000",
        f"{s3a}connection.ssl.enabled": "false",
        f"{s3a}path.style.access": "true",
        f"{s3a}access.key": "AK",
        f"{s3a}secret.key": "SK",
        f"{s3a}endpoint.region": "eu-west-1",
        "spark.sql.shuffle.partitions": "4",
    }
    assert storage.s3_options(conf) == {
        "endpoint_url": "http://minio.internal:9000",
        "key": "AK",
        "secret": "SK",
        "config_kwargs": {"s3": {"addressing_style": "path"}},
        "client_kwargs": {"region_name": "eu-west-1"},
    }
    assert storage.s3_options({f"{s3a}endpoint": "s3.example.com"}) == {"endpoint_url": "https://s3.example.com"}
    assert storage.s3_options({}) == {}  # AWS's own defaults: environment, instance profile


def test_files_on_s3_are_written_whole_listed_and_moved(s3):
    root = "s3a://bucket/interest"
    storage.check_writable(root)
    storage.write_text(f"{root}/models/LATEST", "v1")
    storage.write_text(f"{root}/models/LATEST", "v2")  # replaced, never appended
    storage.write_text(f"{root}/models/v2/_SUCCESS", "")
    storage.write_text(f"{root}/models/v2/weights.h5", "w")
    assert storage.read_text(f"{root}/models/LATEST") == "v2"
    assert storage.list_dirs(f"{root}/models") == ["v2"]
    assert storage.list_files(f"{root}/models") == [f"{root}/models/LATEST", f"{root}/models/v2/weights.h5"]
    storage.replace(f"{root}/models/v2", f"{root}/models/v3")
    assert storage.list_dirs(f"{root}/models") == ["v3"] and not storage.exists(f"{root}/models/v2")
    assert not [f for f in storage.list_files(root) if ".probe-" in f]


def test_a_missing_bucket_needs_a_person_and_a_stopped_server_a_retry(s3):
    with pytest.raises(storage.StorageError, match=r"^s3a://no-such-bucket/x is not writable: .*bucket") as err:
        storage.check_writable("s3a://no-such-bucket/x")
    assert not isinstance(err.value, RetryableError) and "\n" not in str(err.value)  # exit 2
    s3.stop()
    with pytest.raises(storage.StorageUnreachableError, match=r"^s3a://bucket/x is not writable: .*unreachable"):
        storage.check_writable("s3a://bucket/x")  # exit 75


def test_a_lock_that_cannot_be_released_keeps_the_runs_own_error(s3):
    """The storage goes away under a run: the run ends on its own error, not on the lock's; the
    lock stays for the next run to take over once this process is gone."""
    with pytest.raises(RuntimeError, match="the run's own error"):
        with date_lock("s3a://bucket/interest", "nightly", "2026-11-26"):
            s3.stop()
            raise RuntimeError("the run's own error")
    s3.start()
    assert storage.exists(lock_path("s3a://bucket/interest", "nightly", "2026-11-26"))
    with pytest.raises(RunLockedError, match="another nightly run of 2026-11-26 is in progress"):
        with date_lock("s3a://bucket/interest", "nightly", "2026-11-26"):  # its process (this one) lives on
            pass


def test_a_storage_server_lost_under_spark_is_found_in_the_jvms_causes(spark, tmp_path):
    from pyspark.errors import AnalysisException

    port = free_port()  # nothing listens on it
    with pytest.raises(Exception) as lost:
        spark.read.parquet(f"hdfs://127.0.0.1:{port}/events").count()
    assert "java.net.ConnectException" in (storage.unreachable_cause(lost.value) or "")
    with pytest.raises(AnalysisException) as missing:
        spark.read.parquet(str(tmp_path / "nothing-here")).count()
    assert storage.unreachable_cause(missing.value) is None  # a missing path is not an outage
    try:
        try:
            raise storage.StorageUnreachableError("cannot read s3a://b/x: unreachable (EndpointConnectionError)")
        except storage.StorageError:
            raise ValueError("raised while handling it") from None
    except ValueError as wrapped:
        assert storage.unreachable_cause(wrapped) is None  # `from None` hid it on purpose
    try:
        try:
            raise ConnectionRefusedError("connection refused")
        except OSError as exc:
            raise KeyError("later") from exc
    except KeyError as chained:
        assert storage.unreachable_cause(chained) == "connection refused"


def test_hadoop_aws_follows_pyspark_and_packages_are_listed_once():
    import glob
    import os

    import pyspark

    jars = os.path.join(os.path.dirname(pyspark.__file__), "jars")
    assert glob.glob(os.path.join(jars, f"hadoop-client-api-{hadoop_version()}.jar"))
    assert s3a_package() == f"org.apache.hadoop:hadoop-aws:{hadoop_version()}"
    assert add_package("a:b:1,org.apache.hadoop:hadoop-aws:3.3.1", s3a_package()) == f"a:b:1,{s3a_package()}"
    assert add_package(None, "a:b:2") == "a:b:2" and add_package("a:b:2", "a:b:2") == "a:b:2"


def test_a_session_without_the_s3a_jars_says_which_package_to_submit_with(spark):
    """The shared session has no hadoop-aws: a job on s3a:// under it fails at start-up in one line."""
    from interest.spark import S3ANotAvailableError, require_s3a

    with pytest.raises(S3ANotAvailableError, match=r"--packages org\.apache\.hadoop:hadoop-aws:\d+\.\d+\.\d+ ") as err:
        require_s3a(spark)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_a_local_session_on_s3a_adds_the_connector_itself():
    """Local mode (a laptop, ``make demo`` on s3a://): get_spark puts hadoop-aws at pyspark's Hadoop
    version on ``spark.jars.packages`` and its classes load. A process of its own: the shared
    session of the tests has no S3A jars and would be returned instead."""
    import subprocess
    import sys

    from conftest import ROOT

    code = (
        "from interest.config import load_config\n"
        "from interest.spark import get_spark\n"
        "cfg = load_config('conf/local.yaml', ['paths.root=s3a://any-bucket/interest'])\n"
        "spark = get_spark(cfg)\n"
        "print('packages=' + spark.conf.get('spark.jars.packages'))\n"
        "spark.stop()\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    [line] = [ln for ln in run.stdout.splitlines() if ln.startswith("packages=")]
    assert s3a_package() in line.split("=", 1)[1].split(","), line


def test_a_paused_fault_waits_for_the_test_then_goes_on_and_fires_once(tmp_path, monkeypatch):
    marker = tmp_path / "paused"
    monkeypatch.setenv("INTEREST_FAULTS", f"pause@publish_x_commit:{marker}")
    job = threading.Thread(target=faults.maybe_fail, args=("publish_x_commit",))
    job.start()
    job.join(2)
    assert marker.exists() and job.is_alive()  # there, and waiting
    (tmp_path / "paused.go").touch()
    job.join(10)
    assert not job.is_alive()
    faults.maybe_fail("publish_x_commit")  # a second arrival goes straight on
