#!/usr/bin/env bash
# spark-submit a job with the interest package shipped to the executors.
#   ./deploy/submit.sh jobs/nightly.py --conf conf/cluster.yaml --date 2026-11-26
# Settings (environment): SPARK_MASTER (default yarn), DEPLOY_MODE (client), PYSPARK_PYTHON (the
# interpreter with the pinned stack on every node, e.g. a packed venv, see README), SUBMIT_OPTS
# (extra spark-submit options), DELTA (default 1: add Delta Lake's jar and settings, for
# embed.table_format: delta; 0 for parquet tables).
set -euo pipefail
cd "$(dirname "$0")/.."
make -s package
DELTA_OPTS=()
if [ "${DELTA:-1}" = 1 ]; then
  # the jar at the version of the delta-spark pip package (pyproject.toml pins both)
  DELTA_OPTS=(--packages io.delta:delta-spark_2.12:3.3.2
              --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension
              --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog)
fi
exec spark-submit \
  --master "${SPARK_MASTER:-yarn}" \
  --deploy-mode "${DEPLOY_MODE:-client}" \
  --py-files dist/interest.zip \
  --conf spark.dynamicAllocation.enabled=false \
  "${DELTA_OPTS[@]}" \
  ${SUBMIT_OPTS:-} \
  "$@"
