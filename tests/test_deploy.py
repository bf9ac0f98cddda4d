"""The scheduling examples: the Airflow DAG passes the day that just ended and keeps dates in order;
the cron line passes yesterday's date and holds a lock. Airflow is not installed: the DAG is parsed
and its date template rendered as Airflow renders it."""

from __future__ import annotations

import ast
import datetime as dt
import re
import subprocess
import time

import jinja2

from conftest import ROOT

DAG = ROOT / "deploy" / "airflow_dag.py"
CRON = ROOT / "deploy" / "crontab.example"


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == name
    ]


def _kwargs(call: ast.Call) -> dict[str, ast.AST]:
    return {k.arg: k.value for k in call.keywords}


def test_airflow_dag_runs_for_the_day_that_just_ended_in_order():
    tree = ast.parse(DAG.read_text())
    constants = {
        t.id: n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)
    }
    dag = _kwargs(_calls(tree, "DAG")[0])
    timetable = dag["schedule"]
    assert isinstance(timetable, ast.Call) and timetable.func.id == "CronDataIntervalTimetable"
    assert timetable.args[0].value == "30 2 * * *"
    assert ast.literal_eval(dag["max_active_runs"]) == 1
    defaults = {k.value: v for k, v in zip(dag["default_args"].keys, dag["default_args"].values)}
    assert ast.literal_eval(defaults["depends_on_past"]) is True
    args = _kwargs(_calls(tree, "SparkSubmitOperator")[0])["application_args"]
    names = [getattr(e, "value", getattr(e, "id", None)) for e in args.elts]
    template = constants[names[names.index("--date") + 1]]
    # The run that starts on 2026-11-27 02:30 covers [2026-11-26 02:30, 2026-11-27 02:30).
    start = dt.datetime(2026, 11, 26, 2, 30, tzinfo=dt.timezone.utc)
    env = jinja2.Environment()
    env.filters["ds"] = lambda value: value.strftime("%Y-%m-%d")  # Airflow's ds filter
    assert env.from_string(template).render(data_interval_start=start, ds="2026-11-27") == "2026-11-26"
    # imports for both major versions: airflow.sdk.DAG (3.x) with a fallback to airflow.DAG (2.x)
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {"airflow.sdk", "airflow", "airflow.timetables.interval"} <= modules


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


def test_every_submit_example_asks_for_the_delta_jar_the_package_pins():
    from interest.spark import delta_package

    jar = delta_package()
    assert jar == "io.delta:delta-spark_2.12:3.3.2"
    tree = ast.parse(DAG.read_text())
    consts = {
        t.id: n.value.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)
    }
    op = _kwargs(_calls(tree, "SparkSubmitOperator")[0])
    assert consts[op["packages"].id] == jar
    assert "DeltaCatalog" in ast.literal_eval(op["conf"])["spark.sql.catalog.spark_catalog"]
    submit = (ROOT / "deploy" / "submit.sh").read_text()
    readme = (ROOT / "README.md").read_text()
    assert f"--packages {jar}" in submit and f"--packages {jar}" in readme
    subprocess.run(["bash", "-n", str(ROOT / "deploy" / "submit.sh")], check=True)
