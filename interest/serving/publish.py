"""Publishing a dt partition of a metastore table atomically, behind quality gates.

A run writes its rows to a fresh folder (``<table>/dt=D/run=<id>``) that no reader knows about,
checks the gates on what it wrote, and only then points the table's ``dt=D`` partition at that
folder with one metastore operation. Readers see either the previous partition or the new one,
never a half-written one; a failed gate or a killed run leaves the table as it was (the orphan
folder is removed by the next run). Re-publishing a date swaps in a new folder and deletes the
old one, so the date's rows are replaced exactly.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from interest import io, storage


class PublishGateError(RuntimeError):
    """A quality gate failed; nothing was published. ``report`` has every gate's result."""

    def __init__(self, table: str, date: str, report: dict[str, Any]) -> None:
        failed = {k: v for k, v in report.items() if isinstance(v, dict) and not v.get("ok", True)}
        lines = "; ".join(f"{k}: {v['detail']}" for k, v in failed.items())
        super().__init__(f"not publishing {table} dt={date}: {lines}")
        self.report = report


@dataclass
class Gates:
    """What a partition must satisfy before readers may see it."""

    vector_columns: list[str] = field(default_factory=list)  # arrays of floats, no NaN/inf
    unit_norm_column: str | None = None  # must have L2 norm 1 within norm_tolerance
    norm_tolerance: float = 1e-3
    expected_rows: int | None = None  # active users; coverage = rows with events / expected
    coverage_filter: str | None = None  # which rows count for coverage (e.g. "n_events > 0")
    min_coverage: float = 0.0
    max_row_change: float | None = None  # vs the latest earlier partition: |Δ| / previous


def table_name(database: str, table: str) -> str:
    return f"`{database}`.`{table}`"


def ensure_table(spark: SparkSession, database: str, table: str, schema_ddl: str, location: str) -> None:
    """Create the database and the dt-partitioned Parquet table (external, at ``location``)."""
    spark.sql(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    spark.sql(f"CREATE TABLE IF NOT EXISTS {table_name(database, table)} ({schema_ddl}, dt STRING) "
              f"USING PARQUET PARTITIONED BY (dt) LOCATION '{location}'")


def partitions(spark: SparkSession, database: str, table: str) -> dict[str, str]:
    """dt -> location of every partition of the table."""
    name = table_name(database, table)
    out = {}
    for row in spark.sql(f"SHOW PARTITIONS {name}").collect():
        dt = row[0].split("=", 1)[1]
        desc = spark.sql(f"DESCRIBE FORMATTED {name} PARTITION (dt='{dt}')").collect()
        location = next((r[1] for r in desc if r[0] and r[0].strip() == "Location"), None)
        out[dt] = location
    return out


def check_gates(spark: SparkSession, staged: DataFrame, gates: Gates, previous_rows: int | None
                ) -> dict[str, Any]:
    """Evaluate every gate on the staged rows; returns {gate: {"ok", "detail", ...}}."""
    aggs = [F.count(F.lit(1)).alias("rows")]
    for col in gates.vector_columns:
        # A NaN computed in pandas arrives as a null element (Arrow's from_pandas conversion),
        # so a missing value counts as broken, like NaN and inf.
        flat = F.flatten(col) if col == "interests" else F.col(col)
        broken = F.col(col).isNull() | F.exists(
            flat, lambda x: x.isNull() | F.isnan(x) | (F.abs(x) == float("inf")))
        aggs.append(F.sum(F.when(broken, 1).otherwise(0)).alias(f"bad_{col}"))
    if gates.unit_norm_column:
        norm = F.sqrt(F.aggregate(gates.unit_norm_column, F.lit(0.0).cast("double"),
                                  lambda acc, x: acc + x.cast("double") * x.cast("double")))
        error = F.coalesce(F.abs(norm - 1.0), F.lit(float("nan")))  # a null norm fails too
        aggs.append(F.max(error).alias("norm_error"))
    if gates.coverage_filter:
        aggs.append(F.sum(F.when(F.expr(gates.coverage_filter), 1).otherwise(0)).alias("covered"))
    stats = staged.agg(*aggs).first().asDict()
    report: dict[str, Any] = {"rows": int(stats["rows"])}
    for col in gates.vector_columns:
        bad = int(stats[f"bad_{col}"] or 0)
        report[f"finite_{col}"] = {"ok": bad == 0,
                                   "detail": f"{bad} row(s) with NaN, inf or missing values in {col}"}
    if gates.unit_norm_column:
        err = float(stats["norm_error"]) if stats["norm_error"] is not None else 0.0
        report["unit_norm"] = {"ok": err <= gates.norm_tolerance,  # False for NaN too
                               "detail": f"max |norm - 1| = {err:.2e} (tolerance {gates.norm_tolerance:g})"}
    if gates.coverage_filter and gates.expected_rows:
        share = int(stats["covered"] or 0) / gates.expected_rows
        report["coverage"] = {"ok": share >= gates.min_coverage,
                              "detail": f"{share:.1%} of {gates.expected_rows:,} active users "
                                        f"(minimum {gates.min_coverage:.0%})"}
    if gates.max_row_change is not None and previous_rows:
        change = abs(report["rows"] - previous_rows) / previous_rows
        report["row_change"] = {"ok": change <= gates.max_row_change,
                                "detail": f"{report['rows']:,} rows vs {previous_rows:,} in the previous "
                                          f"partition ({change:.0%}, limit {gates.max_row_change:.0%})"}
    if report["rows"] == 0:
        report["not_empty"] = {"ok": False, "detail": "no rows"}
    return report


def publish_partition(spark: SparkSession, database: str, table: str, date: str, rows: DataFrame,
                      gates: Gates, location: str) -> dict[str, Any]:
    """Write ``rows`` as partition dt=``date`` of the table, atomically, if the gates pass.

    Returns the gate report plus where the partition lives. Raises PublishGateError (and
    publishes nothing) when a gate fails.
    """
    name = table_name(database, table)
    existing = partitions(spark, database, table)
    _remove_orphans(spark, location, date, set(existing.values()))
    folder = f"{location.rstrip('/')}/dt={date}/run={uuid.uuid4().hex[:12]}"
    rows.drop("dt").write.mode("errorifexists").parquet(folder)
    staged = spark.read.parquet(folder)
    earlier = sorted(d for d in existing if d < date)
    previous_rows = (spark.read.parquet(existing[earlier[-1]]).count() if earlier else None)
    report = check_gates(spark, staged, gates, previous_rows)
    if not all(v.get("ok", True) for v in report.values() if isinstance(v, dict)):
        io.delete(spark, folder)
        raise PublishGateError(f"{database}.{table}", date, report)
    if date in existing:
        spark.sql(f"ALTER TABLE {name} PARTITION (dt='{date}') SET LOCATION '{folder}'")
        old = existing[date]
        if old and old.rstrip("/") != folder.rstrip("/"):
            io.delete(spark, old)
    else:
        spark.sql(f"ALTER TABLE {name} ADD PARTITION (dt='{date}') LOCATION '{folder}'")
    spark.sql(f"REFRESH TABLE {name}")
    report["location"] = folder
    return report


def _remove_orphans(spark: SparkSession, location: str, date: str, referenced: set[str]) -> None:
    """Folders of earlier runs for ``date`` that never got published (failed gate, killed run).

    Run folders are compared by name (``run=<id>``, unique per run), which does not depend on how
    the metastore spells the filesystem URI.
    """
    day = f"{location.rstrip('/')}/dt={date}"
    keep = {r.rstrip("/").rsplit("/", 1)[-1] for r in referenced if r}
    for name in storage.list_dirs(day):
        if name.startswith("run=") and name not in keep:
            storage.delete(f"{day}/{name}")


def apply_retention(spark: SparkSession, database: str, table: str, keep: int) -> list[str]:
    """Drop all but the newest ``keep`` partitions (and their folders); returns the dropped dates."""
    existing = partitions(spark, database, table)
    dropped = sorted(existing)[:-keep] if keep > 0 and len(existing) > keep else []
    for dt in dropped:
        spark.sql(f"ALTER TABLE {table_name(database, table)} DROP IF EXISTS PARTITION (dt='{dt}')")
        if existing[dt]:
            io.delete(spark, existing[dt].rsplit("/run=", 1)[0])
    return dropped
