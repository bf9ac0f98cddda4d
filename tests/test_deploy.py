"""The scheduling examples: the Airflow DAG, loaded by a real Airflow 3 in its own environment,
passes the day that just ended, keeps dates in order and retries only what is worth a retry; the
cron line passes yesterday's date and holds a lock."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

DAG = ROOT / "deploy" / "airflow_dag.py"
CRON = ROOT / "deploy" / "crontab.example"


AIRFLOW = ROOT / ".airflow" / "bin" / "python"  # its own environment: make airflow (make test runs it)
CHECK = Path(__file__).parent / "deploy" / "airflow_check.py"


def _airflow(tmp_path: Path, *args: str) -> str:
    """Run the check in the Airflow environment; its last stdout line."""
    if not AIRFLOW.exists():
        pytest.skip("Airflow is not installed here: `make airflow` installs it into .airflow (make test does)")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW_CONN_SPARK_INTEREST": "spark://local",  # the connection the DAG names: local Spark here
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # pyspark's spark-submit
        "PYSPARK_PYTHON": sys.executable,
        "INTEREST_HOME": "/opt/interest",
    }
    run = subprocess.run(
        [str(AIRFLOW), str(CHECK), str(DAG), *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict:
    """The DAG loaded by a real Airflow 3; the run the scheduler starts on 2026-11-27 02:30 and its
    spark-submit command as the Spark provider builds it."""
    return json.loads(_airflow(tmp_path_factory.mktemp("airflow"), "render", "2026-11-27T02:30:00+00:00"))


def test_airflow_runs_the_day_that_just_ended_in_order(rendered):
    assert rendered["timetable"] == "CronDataIntervalTimetable"
    assert rendered["interval"] == ["2026-11-26T02:30:00+00:00", "2026-11-27T02:30:00+00:00"]
    assert rendered["run_after"] == "2026-11-27T02:30:00+00:00"
    command = rendered["command"]
    assert command[0] == "spark-submit" and command[-5:] == [
        "/opt/interest/jobs/nightly.py",
        "--conf",
        "/opt/interest/conf/cluster.yaml",
        "--date",
        "2026-11-26",  # the day that just ended, not the day the run starts
    ]
    assert command[command.index("--py-files") + 1] == "/opt/interest/dist/interest.zip"
    assert (rendered["max_active_runs"], rendered["depends_on_past"], rendered["retries"]) == (1, True, 1)


@pytest.mark.parametrize(("code", "verdict"), [(75, "retried"), (2, "failed at once: interest exited 2 (bad input")])
def test_airflow_retries_exit_75_and_fails_exit_2_at_once(tmp_path, code, verdict):
    """The DAG's operator on a real spark-submit (local master) of an application that exits
    ``code``: 75 raises what Airflow retries, 2 raises AirflowFailException (no retry)."""
    app = tmp_path / "exits.py"
    app.write_text("import sys\nsys.exit(int(sys.argv[1]))\n")
    assert _airflow(tmp_path, "submit", str(app), str(code)).startswith(verdict)


def test_cron_line_passes_yesterday_and_holds_a_lock(tmp_path):
    line = next(ln for ln in CRON.read_text().splitlines() if ln.strip() and not ln.startswith("#"))
    fields = line.split(None, 5)
    assert fields[:5] == ["30", "2", "*", "*", "*"]
    command = fields[5]
    lock = re.search(r"flock -n (\S+) \./deploy/submit\.sh jobs/nightly\.py", command)
    assert lock, command
    date_expr = re.search(r'--date "(\$\(date [^)]*\))"', command).group(1).replace("\\%", "%")
    got = subprocess.run(["bash", "-c", f"echo {date_expr}"], capture_output=True, text=True, check=True)
    yesterday = (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)).isoformat()
    assert got.stdout.strip() == yesterday
    # the lock as the line takes it: a second run while the first holds it exits at once, non-zero
    path = str(tmp_path / "nightly.lock")
    first = subprocess.Popen(["flock", "-n", path, "sleep", "5"])
    try:
        time.sleep(0.5)
        second = subprocess.run(["flock", "-n", path, "true"], timeout=10)
        assert second.returncode == 1
    finally:
        first.kill()
        first.wait()


def test_every_submit_example_asks_for_the_delta_jar_the_package_pins(rendered):
    from interest.spark import delta_package

    jar = delta_package()
    assert jar == "io.delta:delta-spark_2.12:3.3.2"
    command = rendered["command"]
    assert command[command.index("--packages") + 1] == jar
    confs = {command[i + 1] for i, a in enumerate(command) if a == "--conf" and i + 1 < len(command)}
    assert "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog" in confs
    submit = (ROOT / "deploy" / "submit.sh").read_text()
    readme = (ROOT / "README.md").read_text()
    assert f"--packages {jar}" in submit and f"--packages {jar}" in readme
    subprocess.run(["bash", "-n", str(ROOT / "deploy" / "submit.sh")], check=True)
