"""The local driver JVM's class archive: built from a real sessionize run, mapped by a later job's
JVM (strictly: ``-Xshare:on`` refuses to start when it cannot map it), and never required."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from interest import java

from conftest import ROOT


def test_without_an_archive_a_job_gets_no_option_and_off_turns_it_off(tmp_path, monkeypatch):
    found = java.require_java()
    monkeypatch.setenv(java.CACHE_ENV, str(tmp_path / "jvm"))
    assert java.driver_options(found) == ""  # nothing built yet: the JVM starts as before
    path = java.archive_path(found)
    assert path is not None and path.parent == tmp_path / "jvm" and path.suffix == ".jsa"
    monkeypatch.setenv(java.CACHE_ENV, "off")
    assert java.archive_path(found) is None and java.driver_options(found) == ""


@pytest.mark.parametrize(
    "given,env",
    [
        ("-XX:StartFlightRecording=filename=rec.jfr", {}),
        ("-Xmx2g -XX:+FlightRecorder", {}),
        ("", {"JAVA_TOOL_OPTIONS": "-javaagent:/opt/agent.jar"}),
        ("", {"JDK_JAVA_OPTIONS": "-agentlib:jdwp=transport=dt_socket"}),
        ("-XX:SharedArchiveFile=/theirs.jsa", {}),
    ],
)
def test_options_that_hook_class_loading_start_the_jvm_without_the_archive(tmp_path, monkeypatch, given, env):
    found = java.require_java()
    monkeypatch.setenv(java.CACHE_ENV, str(tmp_path / "jvm"))
    for name in ("JDK_JAVA_OPTIONS", "JAVA_TOOL_OPTIONS"):
        monkeypatch.delenv(name, raising=False)
    path = java.archive_path(found)
    assert path is not None
    path.parent.mkdir(parents=True)
    path.write_bytes(b"an archive")
    assert java.driver_options(found, "-Xmx2g -Xshare:on") == f"-XX:SharedArchiveFile={path} {java.QUIET}"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert java.driver_options(found, given) == ""


@pytest.mark.slow
def test_a_built_archive_is_mapped_by_the_next_jobs_jvm(tmp_path):
    """Build into a folder of the test's own, then run the sessionize job with ``-Xshare:on``
    added: Java stops at start-up if the archive does not map, so the job's summary is the proof."""
    env = {**os.environ, java.CACHE_ENV: str(tmp_path / "jvm")}
    built = subprocess.run(
        [sys.executable, "-m", "interest.java"], env=env, capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stderr[-2000:]
    archives = list((tmp_path / "jvm").glob("*.jsa"))
    assert len(archives) == 1 and archives[0].stat().st_size > 10_000_000
    assert not list((tmp_path / "jvm").glob("*.partial"))  # moved into place whole
    again = subprocess.run([sys.executable, "-m", "interest.java"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and str(archives[0]) in again.stdout  # kept, not rebuilt

    root = tmp_path / "run"
    sets = ["--set", f"paths.root={root}", "--set", "embed.table_format=parquet"]
    strict = ["--set", "spark.conf={spark.driver.extraJavaOptions: '-Xshare:on'}"]

    def job(script: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, str(ROOT / "jobs" / script), *args, *sets]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)

    assert job("generate.py", "--events", "2000").returncode == 0
    mapped = job("sessionize.py", "--date", "2026-11-26", *strict)
    assert mapped.returncode == 0, mapped.stdout[-2000:] + mapped.stderr[-2000:]
    summary = json.loads(Path(root / "reports" / "sessionize" / "dt=2026-11-26" / "summary.json").read_text())
    assert summary["accounted"] and summary["events_kept"] > 0

    # Java Flight Recorder on the driver: with the archive mapped, Java 17 crashed at start-up;
    # the job now starts without the archive (the recording's file is opened at start; it is
    # filled as the JVM exits, which may be after the job's process has)
    recorded = job(
        "sessionize.py",
        "--date",
        "2026-11-26",
        "--set",
        f"spark.conf={{spark.driver.extraJavaOptions: '-XX:StartFlightRecording=filename={tmp_path / 'rec.jfr'}'}}",
    )
    assert recorded.returncode == 0, recorded.stdout[-2000:] + recorded.stderr[-2000:]
    assert (tmp_path / "rec.jfr").exists()

    # a broken archive in its place: the same strict JVM now refuses to start, so the pass above
    # was the archive mapping; a plain run (no -Xshare:on) just starts without it. Put in place
    # as build() does, by a rename: a JVM of the run above may still be exiting with the old file
    # mapped, and rewriting that file under it would crash it (SIGBUS)
    broken = tmp_path / "broken.jsa"
    broken.write_bytes(b"not an archive")
    os.replace(broken, archives[0])
    assert job("sessionize.py", "--date", "2026-11-26", *strict).returncode != 0
    plain = job("sessionize.py", "--date", "2026-11-26")
    assert plain.returncode == 0, plain.stderr[-2000:]
