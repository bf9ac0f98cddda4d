"""Example Airflow DAG: the nightly refresh as one SparkSubmitOperator task per day.

Set in Airflow: a Spark connection ``spark_interest`` (master yarn / k8s://… / spark://…), the
Variable ``interest_home`` (the checkout on the scheduler/edge node, with ``make package`` run),
and the Python environment every executor uses (``spark.pyspark.python`` or a shipped archive;
see the README, "Running on a cluster").
"""
from __future__ import annotations

import pendulum
from airflow import DAG
from airflow.models import Variable
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

HOME = Variable.get("interest_home", default_var="/opt/interest")

with DAG(
    dag_id="interest_nightly",
    schedule="30 2 * * *",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=True,  # backfills are safe: a run for a date replaces that date's partition exactly
    max_active_runs=1,  # runs for consecutive dates build on each other's models
    default_args={"retries": 1, "retry_delay": pendulum.duration(minutes=20)},
    tags=["interest"],
) as dag:
    SparkSubmitOperator(
        task_id="nightly_refresh",
        conn_id="spark_interest",
        application=f"{HOME}/jobs/nightly.py",
        py_files=f"{HOME}/dist/interest.zip",
        application_args=["--conf", f"{HOME}/conf/cluster.yaml", "--date", "{{ ds }}"],
        conf={"spark.dynamicAllocation.enabled": "false"},
        name="interest-nightly-{{ ds }}",
    )
