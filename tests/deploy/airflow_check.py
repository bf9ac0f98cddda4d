"""Run by the Airflow virtual environment (``make airflow``), not by pytest: loads the DAG with a
real Airflow, renders its spark-submit command for one run, and runs the task's operator against
a real ``spark-submit`` whose application exits with a given code.

    python airflow_check.py DAG_FILE render RUN_AFTER   -> the DAG's facts and the command, as JSON
    python airflow_check.py DAG_FILE submit APP CODE    -> "retried" or "failed at once"
"""

from __future__ import annotations

import json
import sys

import pendulum
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.exceptions import AirflowFailException
from airflow.timetables.base import DataInterval, TimeRestriction


def load(path: str):
    bag = DagBag(dag_folder=path)
    if bag.import_errors:
        sys.exit(f"the DAG did not load: {bag.import_errors}")
    dag = bag.dags["interest_nightly"]
    return dag, dag.get_task("nightly_refresh")


def render(path: str, run_after: str) -> dict:
    """The run the scheduler makes at ``run_after`` (after the one before it) and its command."""
    dag, task = load(path)
    end = pendulum.parse(run_after)
    before = DataInterval(end.subtract(days=2), end.subtract(days=1))
    info = dag.timetable.next_dagrun_info(
        last_automated_data_interval=before,
        restriction=TimeRestriction(earliest=dag.start_date, latest=None, catchup=True),
    )
    interval = info.data_interval
    context = {"data_interval_start": interval.start, "data_interval_end": interval.end, "ds": end.to_date_string()}
    task.render_template_fields(context)
    command = task._get_hook()._build_spark_submit_command(task.application)
    return {
        "timetable": type(dag.timetable).__name__,
        "interval": [interval.start.isoformat(), interval.end.isoformat()],
        "run_after": info.run_after.isoformat(),
        "max_active_runs": dag.max_active_runs,
        "depends_on_past": task.depends_on_past,
        "retries": task.retries,
        "command": command,
    }


def submit(path: str, app: str, code: str) -> str:
    """The DAG's operator, run on a real spark-submit (local master) of ``app`` that exits ``code``."""
    _, task = load(path)
    task.application, task.application_args, task._py_files, task.py_files = app, [code], None, None
    task._packages = task.packages = None
    try:
        task.execute({})
    except AirflowFailException as err:
        return f"failed at once: {err}"
    except Exception as err:  # Airflow retries any other exception while retries are left
        return f"retried: {type(err).__name__}"
    return "succeeded"


if __name__ == "__main__":
    dag_file, what, *args = sys.argv[1:]
    print(json.dumps(render(dag_file, *args)) if what == "render" else submit(dag_file, *args))
