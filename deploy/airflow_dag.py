"""Example Airflow DAG (Airflow 2.x and 3.x): the nightly refresh, one SparkSubmitOperator per day.

The date handed to ``--date`` is the day that just ended: the DAG uses an explicit data-interval
timetable (``CronDataIntervalTimetable``), so the run that starts at 02:30 on D+1 covers the
interval [D 02:30, D+1 02:30) and passes ``data_interval_start | ds`` = D. (With a bare cron string,
Airflow 3 schedules a ``CronTriggerTimetable`` whose ``ds`` is the day the run starts, which would
process a day still in progress.) ``depends_on_past`` and ``max_active_runs=1`` keep dates in
order: each date builds on the model of the date before it, and a failed date holds the next one.

Only a failure worth a retry is retried. The jobs exit 75 for those (an unreachable metastore or
namenode, a lost executor: README, "Exit codes"); exit 2 (bad input or a wrong config) and exit 1
(a bug) would fail the same way again, so they fail the task at once (``AirflowFailException``).

Set on the scheduler/edge node: a Spark connection ``spark_interest`` (master yarn / k8s://… /
spark://…), the environment variable ``INTEREST_HOME`` (the checkout, with ``make package`` run),
and the Python environment every executor uses (see the README, "Running on a cluster").
"""

from __future__ import annotations

import os
import re
from typing import Any

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.timetables.interval import CronDataIntervalTimetable

try:  # Airflow 3
    from airflow.sdk import DAG
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.exceptions import AirflowFailException

HOME = os.environ.get("INTEREST_HOME", "/opt/interest")
RUN_DATE = "{{ data_interval_start | ds }}"  # the day that just ended, in UTC

DELTA_PACKAGE = "io.delta:delta-spark_2.12:3.3.2"  # at the delta-spark version pyproject.toml pins
NOT_WORTH_A_RETRY = {1: "a bug", 2: "bad input or a wrong config"}  # the jobs' exit codes


class NightlyRefresh(SparkSubmitOperator):
    """spark-submit, with Airflow's retries kept for the failures worth one (exit 75, a killed
    driver); the others fail the task at once, with what to do."""

    def execute(self, context: Any) -> None:
        try:
            super().execute(context)
        except Exception as err:  # the hook says "Error code is: N" when spark-submit fails
            code = re.search(r"Error code is: (-?\d+)", str(err))
            if code and int(code.group(1)) in NOT_WORTH_A_RETRY:
                reason = NOT_WORTH_A_RETRY[int(code.group(1))]
                raise AirflowFailException(
                    f"interest exited {code.group(1)} ({reason}): a retry would fail the same way; "
                    "fix it (the run log says what), then clear the task"
                ) from err
            raise


with DAG(
    dag_id="interest_nightly",
    schedule=CronDataIntervalTimetable("30 2 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=True,  # backfills are safe: each date builds on the newest model before it
    max_active_runs=1,
    default_args={"depends_on_past": True, "retries": 1, "retry_delay": pendulum.duration(minutes=20)},
    tags=["interest"],
) as dag:
    NightlyRefresh(
        task_id="nightly_refresh",
        conn_id="spark_interest",
        application=f"{HOME}/jobs/nightly.py",
        py_files=f"{HOME}/dist/interest.zip",
        application_args=["--conf", f"{HOME}/conf/cluster.yaml", "--date", RUN_DATE],
        packages=DELTA_PACKAGE,  # Delta tables (embed.table_format: delta, the default)
        conf={
            "spark.dynamicAllocation.enabled": "false",
            "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
            "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        },
        name=f"interest-nightly-{RUN_DATE}",
    )
