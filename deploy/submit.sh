#!/usr/bin/env bash
# spark-submit a job with the interest package shipped to the executors.
#   ./deploy/submit.sh jobs/nightly.py --conf conf/cluster.yaml --date 2026-11-26
# Settings (environment): SPARK_MASTER (default yarn), DEPLOY_MODE (client), PYSPARK_PYTHON (the
# interpreter with the pinned stack on every node, e.g. a packed venv, see README), SUBMIT_OPTS
# (extra spark-submit options).
set -euo pipefail
cd "$(dirname "$0")/.."
make -s package
exec spark-submit \
  --master "${SPARK_MASTER:-yarn}" \
  --deploy-mode "${DEPLOY_MODE:-client}" \
  --py-files dist/interest.zip \
  --conf spark.dynamicAllocation.enabled=false \
  ${SUBMIT_OPTS:-} \
  "$@"
