"""Helpers of the nightly tests: configs on the planted data, embed jobs as processes, what a new reader sees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from interest.models.export import (
    load_model,
    save_model,
)

from conftest import DATE, PLANTED, ROOT, delta_digests, make_config

PREV = "2026-11-25"
FAST = [*PLANTED, "train.epochs=2", "train.patience=5"]


def cfg_for(planted: Path, database: str, *extra: str):
    """A config on the planted raw events with its own root (``<planted>/<database>``) and table
    database (tests share one metastore)."""
    return make_config(planted / database, *FAST, *database_sets(planted, database), *extra)


def database_sets(planted: Path, database: str) -> list[str]:
    """What :func:`cfg_for` sets beside the root: the planted raw events and the table database."""
    return [f"ingest.path={planted}/raw/events", f"embed.database={database}"]


def table_rows(spark, cfg, date: str, table: str | None = None) -> pd.DataFrame:
    name = f"`{cfg.embed.database}`.`{table or cfg.embed.table}`"
    frame = spark.sql(f"SELECT * FROM {name} WHERE dt = '{date}'").toPandas()
    return frame.sort_values(frame.columns[0]).reset_index(drop=True)


def embed_job(args: list[str], root: Path | str, *extra: str, faults: str = "", **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "INTEREST_FAULTS": faults}
    sets = [
        f"paths.root={root}",
        *FAST,
        "spark.conf={spark.ui.enabled: 'false', spark.sql.shuffle.partitions: '4'}",
        *extra,
    ]
    return subprocess.Popen(
        [sys.executable, *args, *[a for s in sets for a in ("--set", s)]],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


READ_BACK = """
import sys
from interest.config import load_config
from interest.spark import get_spark
from interest.serving.publish import Table
root, date, fmt = sys.argv[1:4]
cfg = load_config("conf/local.yaml", [f"paths.root={root}", f"embed.table_format={fmt}",
                                      "spark.conf={spark.ui.enabled: 'false'}"])
spark = get_spark(cfg, "read-back")
rows = spark.sql("SELECT user_id, size(embedding) AS d, size(interests) AS k, size(top_items) AS t, "
                 "is_cold_start, input_file_name() AS f FROM default.user_interest_embeddings "
                 "WHERE dt = '%s'" % date).collect()
print("ROWS", len(rows), len({r.user_id for r in rows}), sorted({r.d for r in rows}), sorted({r.k for r in rows}),
      max(r.t for r in rows))
versions = sorted(r.model_version for r in spark.sql(
    "SELECT DISTINCT model_version FROM default.user_interest_embeddings WHERE dt = '%s'" % date).collect())
table = Table(spark, "default", "user_interest_embeddings")
if fmt == "parquet":  # the partition's folder
    seen = table.partitions()[date].rstrip("/").rsplit("/", 1)[-1]
else:  # the table version and the data files readers get
    seen = (table.version(), sorted({r.f.rsplit("/", 1)[-1] for r in rows}))
print("SEEN", seen, versions)
"""


def read_back(root: Path, table_format: str) -> tuple[str, str]:
    """(ROWS line, SEEN line) as a new reader process sees the table."""
    read = subprocess.run(
        [sys.executable, "-c", READ_BACK, str(root), DATE, table_format],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    lines = read.stdout.splitlines()
    try:
        return (next(ln for ln in lines if ln.startswith("ROWS")), next(ln for ln in lines if ln.startswith("SEEN")))
    except StopIteration:
        raise AssertionError(read.stderr[-3000:]) from None


TABLE_DIGEST = """
import hashlib, sys
from interest.config import load_config
from interest.spark import get_spark
root, date = sys.argv[1:3]
cfg = load_config("conf/local.yaml", [f"paths.root={root}", "spark.conf={spark.ui.enabled: 'false'}"])
spark = get_spark(cfg, "digest")
for table in ("user_interest_embeddings", "item_embeddings", "user_recommendations"):
    rows = spark.sql(f"SELECT * FROM default.{table} WHERE dt = '{date}'").drop("dt").collect()
    text = repr(sorted(repr(r) for r in rows))
    print("DIGEST", table, len(rows), hashlib.sha1(text.encode()).hexdigest())
"""


def metastore_digests(root: Path) -> dict[str, tuple[int, str]]:
    """Per table, (rows, digest of their exact contents) of DATE as a new reader process sees them
    through the metastore."""
    read = subprocess.run(
        [sys.executable, "-c", TABLE_DIGEST, str(root), DATE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    lines = [ln.split() for ln in read.stdout.splitlines() if ln.startswith("DIGEST")]
    assert len(lines) == 3, read.stderr[-3000:]
    return {table: (int(rows), digest) for _, table, rows, digest in lines}


def finish(job: subprocess.Popen, code: int = 0, timeout: int = 900) -> str:
    out, _ = job.communicate(timeout=timeout)
    assert job.returncode == code, out[-3000:]
    return out


def bad_night(planted_model: Path, where: Path) -> str:
    """Another model of the same shape: the planted model's weights moved by noise, so every table
    it publishes differs from the planted model's."""
    model = load_model(str(planted_model))
    rng = np.random.default_rng(7)
    model.encoder.set_weights(
        [w + rng.normal(0.0, 0.5 * (w.std() + 1e-3), w.shape) for w in model.encoder.get_weights()]
    )
    return save_model(model.encoder, model.vocab, model.config, model.metrics, str(where), "bad-night")


def table_digests(spark, root: Path) -> dict[str, tuple[int, str]]:
    """Per table, (rows, digest of their exact contents) of DATE, read from the Delta logs."""
    return delta_digests(spark, str(root / "warehouse"), DATE)
