"""Publishing a dt partition of a metastore table atomically, behind quality gates.

Two table formats, one contract: readers see either the previous dt=D or the new one, never a
half-written one; a failed gate or a killed run leaves the table as it was; re-publishing a date
replaces its rows exactly. Every run first writes its rows to a folder no reader knows about
(``run=<id>``) and checks the gates on exactly those rows; only then does it commit.

- ``delta`` (default): the staged rows go into the Delta table in one commit that replaces
  dt=D (``replaceWhere``). The table keeps its history: ``rollback`` restores the newest version
  written by another model than the bad night's, and retention is Delta's own DELETE plus VACUUM.
- ``parquet``: a Hive table whose ``dt=D`` partition is pointed at the staged folder with one
  metastore operation (``<table>/dt=D/run=<id>``); the old folder is then deleted.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType, _parse_datatype_string

from interest import faults, io, storage
from interest.errors import RetryableError, UserError
from interest.layout import partition_dir
from interest.spark import jvm

log = logging.getLogger(__name__)

STAGING = "_staging"  # Delta tables: staged runs live in <table>/_staging, which Delta and VACUUM skip


@dataclass(frozen=True)
class GateResult:
    ok: bool
    detail: str


@dataclass(frozen=True)
class GateReport:
    """Every gate's verdict on a staged partition of ``rows`` rows."""

    rows: int
    gates: dict[str, GateResult]

    @property
    def ok(self) -> bool:
        return all(g.ok for g in self.gates.values())

    @property
    def failed(self) -> dict[str, GateResult]:
        return {name: g for name, g in self.gates.items() if not g.ok}


@dataclass(frozen=True)
class PublishResult:
    """One table's partition made visible: its gates, where it lives and (Delta) the commit."""

    table: str
    date: str
    rows: int
    gates: dict[str, GateResult]
    location: str
    version: int | None = None  # Delta: the commit that published the partition
    previous_version: int | None = None


class PublishGateError(UserError, RuntimeError):
    """A quality gate failed; nothing was published. ``report`` has every gate's result."""

    def __init__(self, table: str, date: str, report: GateReport) -> None:
        lines = "; ".join(f"{name}: {g.detail}" for name, g in report.failed.items())
        super().__init__(f"not publishing {table} dt={date}: {lines}")
        self.report = report


class MetastoreUnavailableError(RetryableError, RuntimeError):
    """The table catalog (Hive metastore) does not answer; nothing was published."""


# What Spark's Hive client says when it cannot reach its metastore (remote Thrift or database).
_UNREACHABLE = (
    "Unable to instantiate org.apache.hadoop.hive.ql.metadata.SessionHiveMetaStoreClient",
    "Could not connect to meta store",
    "TTransportException",
)


@contextlib.contextmanager
def metastore_errors(spark: SparkSession) -> Iterator[None]:
    """Turn an unreachable metastore inside the block into one retryable line naming it."""
    try:
        yield
    except Exception as exc:
        if not any(marker in str(exc) for marker in _UNREACHABLE):
            raise
        uri = spark.sparkContext.getConf().get("spark.hadoop.hive.metastore.uris", "") or "the embedded metastore"
        raise MetastoreUnavailableError(
            f"the Hive metastore is unreachable ({uri}): {str(exc).splitlines()[0][:200]}; nothing was published"
        ) from None


def check_metastore(spark: SparkSession) -> None:
    """Fail in one line before the work that needs the metastore, when it does not answer."""
    with metastore_errors(spark):
        spark.sql("SHOW DATABASES").collect()


class TableFormatError(UserError, RuntimeError):
    """The table in the metastore is not what this job writes (schema or format); left as it is."""


class TableFilesMissingError(UserError, RuntimeError):
    """The metastore names a table whose folder is gone (deleted or moved outside the job)."""


def table_location(spark: SparkSession, database: str, name: str) -> str:
    """Where the metastore says a table's files are. Read from the catalog entry alone: SQL's
    DESCRIBE opens a Delta table's log, which fails when the files are gone."""
    java = jvm(spark)
    ident = java.org.apache.spark.sql.catalyst.TableIdentifier(name, java.scala.Some(database))
    meta = spark._jsparkSession.sessionState().catalog().getTableMetadata(ident)
    return str(meta.location().toString())


def require_files(spark: SparkSession, database: str, name: str) -> None:
    """Refuse, in one line, a registered table whose folder is gone: Spark's own error names
    neither the table nor what to do."""
    where = table_location(spark, database, name)
    if not io.exists(spark, where):
        raise TableFilesMissingError(
            f"table {database}.{name} is registered at {where}, but nothing is there (deleted or "
            f"moved outside this job): restore the folder, or DROP TABLE {table_name(database, name)} "
            f"to start the table afresh"
        )


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


def ddl(schema: StructType) -> str:
    """A schema as the column list of CREATE TABLE (``name type, ...``)."""
    return ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in schema.fields)


def _provider(spark: SparkSession, name: str) -> str:
    rows = spark.sql(f"DESCRIBE TABLE EXTENDED {name}").collect()
    found = next((r[1] for r in rows if r[0] and r[0].strip() == "Provider"), "hive")
    return str(found).strip().lower()


def _check_schema(what: str, actual: StructType, expected: StructType) -> None:
    """Column names and types must match ours (nullability aside)."""
    have = {f.name: f.dataType.simpleString() for f in actual.fields}
    want = {f.name: f.dataType.simpleString() for f in expected.fields}
    if have == want:
        return
    diffs = [
        f"{c}: table has {have.get(c, 'nothing')}, we write {want.get(c, 'nothing')}"
        for c in sorted(set(have) | set(want))
        if have.get(c) != want.get(c)
    ]
    raise TableFormatError(
        f"table {what} has another schema than this job writes ({'; '.join(diffs)}); "
        f"the table was left as it is: migrate it or publish to another table"
    )


@dataclass(frozen=True)
class Table:
    """One dt-partitioned metastore table, named once and then asked (as ``DeltaTable.forName``
    reads): create it, publish a date behind gates, list its dates, apply retention, roll back.

    ``location`` is where a new table's files go; ``table_format`` is what this job writes
    (``delta`` or ``parquet``).
    """

    spark: SparkSession
    database: str
    name: str
    location: str = ""
    table_format: str = "delta"

    @property
    def qualified(self) -> str:
        """`database`.`name`, quoted for SQL."""
        return table_name(self.database, self.name)

    def __str__(self) -> str:
        return f"{self.database}.{self.name}"

    def ensure(self, schema_ddl: str) -> None:
        """Create the database and the dt-partitioned table (external, at ``location``) if missing;
        refuse, in one line, a table that exists in another format or with another schema. A table
        that lacks only columns a newer release adds gets them (earlier partitions read null)."""
        spark, name = self.spark, self.qualified
        spark.sql(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
        expected = cast(StructType, _parse_datatype_string(f"{schema_ddl}, dt STRING"))
        if spark.catalog.tableExists(f"{self.database}.{self.name}"):
            require_files(spark, self.database, self.name)
            provider = _provider(spark, name)
            if provider != self.table_format:
                raise TableFormatError(
                    f"table {self} is a {provider} table but embed.table_format is "
                    f"{self.table_format}: set embed.table_format: {provider}, or convert it "
                    f"(CONVERT TO DELTA / a new table); the table was left as it is"
                )
            actual = spark.table(name).schema
            added = [f for f in expected.fields if f.name not in actual.fieldNames()]
            if added and all(f.name in expected.fieldNames() for f in actual.fields):  # a newer release's columns
                columns = ddl(StructType(added))
                spark.sql(f"ALTER TABLE {name} ADD COLUMNS ({columns})")
                log.info(f"table {self}: added column(s) {columns} (earlier partitions read them as null)")
                actual = spark.table(name).schema
            _check_schema(str(self), actual, expected)
            return
        using = "DELTA" if self.table_format == "delta" else "PARQUET"
        try:
            spark.sql(
                f"CREATE TABLE {name} ({schema_ddl}, dt STRING) USING {using} PARTITIONED BY (dt) "
                f"LOCATION '{self.location}'"
            )
        except Exception as exc:  # a Delta log already at the location, with another schema
            if "schema" not in str(exc).lower():
                raise
            existing = spark.read.format("delta").load(self.location).schema
            _check_schema(f"{self} (at {self.location})", existing, expected)
            raise

    def dates(self) -> list[str]:
        """The published dt values, oldest first (either format)."""
        require_files(self.spark, self.database, self.name)
        if _provider(self.spark, self.qualified) == "delta":
            return sorted(r.dt for r in self.spark.table(self.qualified).select("dt").distinct().collect())
        return sorted(self.partitions())

    def partitions(self) -> dict[str, str]:
        """dt -> location of every partition of a Parquet (Hive) table."""
        out: dict[str, str] = {}
        for row in self.spark.sql(f"SHOW PARTITIONS {self.qualified}").collect():
            dt = row[0].split("=", 1)[1]
            desc = self.spark.sql(f"DESCRIBE FORMATTED {self.qualified} PARTITION (dt='{dt}')").collect()
            location = next((r[1] for r in desc if r[0] and r[0].strip() == "Location"), None)
            out[dt] = location or ""
        return out

    def history(self) -> list[dict[str, Any]]:
        """A Delta table's commits, newest first: version, timestamp, operation, parameters and
        userMetadata (the night that made it)."""
        rows = (
            self.spark.sql(f"DESCRIBE HISTORY {self.qualified}")
            .select("version", "timestamp", "operation", "operationParameters", "userMetadata")
            .collect()
        )
        return [r.asDict() for r in rows]

    def version(self) -> int:
        """The current version of a Delta table."""
        return int(self.history()[0]["version"])

    def publish(self, date: str, rows: DataFrame, gates: Gates, night: str = "") -> PublishResult:
        """Write ``rows`` as partition dt=``date``, atomically, if the gates pass.

        Returns the gates' verdicts, where the partition lives and, for Delta, the committed
        version. Raises PublishGateError (and publishes nothing) when a gate fails. ``night`` names
        what is published (date and model); a Delta commit keeps it as its ``userMetadata``, so
        that :meth:`rollback` knows two commits of one night (a run killed after its commit, run
        again).
        """
        faults.maybe_fail(f"publish_{self.name}_start")  # off unless a fault-matrix test asks for it
        if self.table_format == "delta":
            return self._publish_delta(date, rows, gates, night)
        spark, name = self.spark, self.qualified
        existing = self.partitions()
        day = partition_dir(self.location, date)
        _remove_orphans(day, set(existing.values()))
        folder = f"{day}/run={uuid.uuid4().hex[:12]}"
        previous = sorted(d for d in existing if d < date)
        staged, report = self._stage_and_gate(
            date, rows, gates, folder, lambda: spark.read.parquet(existing[previous[-1]]).count() if previous else None
        )
        faults.maybe_fail(f"publish_{self.name}_staged")
        faults.maybe_fail(f"publish_{self.name}_commit")  # the swap below is the commit
        if date in existing:
            spark.sql(f"ALTER TABLE {name} PARTITION (dt='{date}') SET LOCATION '{folder}'")
            faults.maybe_fail(f"publish_{self.name}_committed")
            old = existing[date]
            if old and old.rstrip("/") != folder.rstrip("/"):
                io.delete(spark, old)
        else:
            spark.sql(f"ALTER TABLE {name} ADD PARTITION (dt='{date}') LOCATION '{folder}'")
            faults.maybe_fail(f"publish_{self.name}_committed")
        spark.sql(f"REFRESH TABLE {name}")
        return PublishResult(str(self), date, report.rows, report.gates, folder)

    def _publish_delta(self, date: str, rows: DataFrame, gates: Gates, night: str) -> PublishResult:
        """Stage under ``_staging``, gate, then replace dt=D in one Delta commit (replaceWhere)."""
        spark = self.spark
        day = partition_dir(self.location, date, STAGING)
        _remove_orphans(day, set())  # staged runs are never referenced once committed or failed
        folder = f"{day}/run={uuid.uuid4().hex[:12]}"
        table_df = spark.table(self.qualified)

        def previous_rows() -> int | None:
            earlier = table_df.where(F.col("dt") < date).agg(F.max("dt")).collect()[0][0]
            return table_df.where(F.col("dt") == earlier).count() if earlier else None

        staged, report = self._stage_and_gate(date, rows, gates, folder, previous_rows)
        faults.maybe_fail(f"publish_{self.name}_staged")
        before = self.version()
        where = spark.sql(f"DESCRIBE DETAIL {self.qualified}").collect()[0]["location"]  # as the metastore spells it
        faults.maybe_fail(f"publish_{self.name}_commit")
        writer = (
            staged.withColumn("dt", F.lit(date))
            .select(*table_df.columns)
            .write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", f"dt = '{date}'")
        )
        (writer.option("userMetadata", night) if night else writer).save(where)
        faults.maybe_fail(f"publish_{self.name}_committed")  # committed; the staged copy not yet removed
        io.delete(spark, folder)
        return PublishResult(str(self), date, report.rows, report.gates, self.location, self.version(), before)

    def _stage_and_gate(
        self, date: str, rows: DataFrame, gates: Gates, folder: str, previous_rows: Callable[[], int | None]
    ) -> tuple[DataFrame, GateReport]:
        """Write the rows to ``folder`` and check the gates on exactly what was written."""
        rows.drop("dt").write.mode("errorifexists").parquet(folder)
        staged = self.spark.read.parquet(folder)
        # the previous date's row count costs a query: only the row-change gate needs it
        report = check_gates(staged, gates, previous_rows() if gates.max_row_change is not None else None)
        if not report.ok:
            io.delete(self.spark, folder)
            raise PublishGateError(str(self), date, report)
        return staged, report

    def apply_retention(self, keep: int, vacuum_retain_hours: int = 168) -> list[str]:
        """Drop all but the newest ``keep`` dates; returns the dropped dates.

        Delta: one DELETE for the old dates, then VACUUM, which removes files no version younger
        than ``vacuum_retain_hours`` needs (so RESTORE to a recent version still works).
        Parquet: each old partition is dropped from the metastore and its folder deleted.
        """
        name = self.qualified
        # Parquet: one metastore listing gives both the dates and their folders
        existing = self.partitions() if self.table_format == "parquet" else {}
        present = sorted(existing) if self.table_format == "parquet" else self.dates()
        dropped = present[:-keep] if keep > 0 and len(present) > keep else []
        if self.table_format == "delta":
            if dropped:
                self.spark.sql(f"DELETE FROM {name} WHERE dt <= '{dropped[-1]}'")
                self.spark.sql(f"VACUUM {name} RETAIN {vacuum_retain_hours} HOURS")
            return dropped
        for dt in dropped:
            self.spark.sql(f"ALTER TABLE {name} DROP IF EXISTS PARTITION (dt='{dt}')")
            if existing[dt]:
                io.delete(self.spark, existing[dt].rsplit("/run=", 1)[0])
        return dropped

    def rollback(self, to_version: int | None = None) -> tuple[int, int]:
        """RESTORE a Delta table to ``to_version``, by default the newest version written by
        another model than the latest publish's (so that model's retention DELETEs are undone too).

        A bad model's commits are undone together: a night killed after its commit and run again,
        or the nights that reused the model before anyone looked. Commits without a named model
        (``night``) each count as their own. Returns (from, to)."""
        if _provider(self.spark, self.qualified) != "delta":
            raise TableFormatError(f"table {self} is not a Delta table: rollback needs embed.table_format: delta")
        commits = self.history()
        current = int(commits[0]["version"])
        if to_version is None:
            writes = [c for c in _lineage(commits) if c["operation"] in ("WRITE", "CREATE TABLE AS SELECT")]
            model = night_model(writes[0]["userMetadata"]) if writes else None
            same = list(itertools.takewhile(lambda c: model and night_model(c["userMetadata"]) == model, writes))
            same = same or writes[:1]
            to_version = int(same[-1]["version"]) - 1 if same else -1
            made = {int(c["version"]): c["operation"] for c in commits}
            if made.get(to_version, "CREATE TABLE") == "CREATE TABLE":  # nothing, or the empty table
                raise TableFormatError(
                    f"table {self} has no publish by another model to roll back to (--version names one)"
                )
        if not 0 <= to_version < current:
            raise TableFormatError(f"table {self} is at version {current}: cannot roll back to {to_version}")
        self.spark.sql(f"RESTORE TABLE {self.qualified} TO VERSION AS OF {to_version}")
        return current, to_version


def _lineage(commits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The commits that made the table as it is now, newest first: a RESTORE stands for the
    version it restored, so what an earlier rollback undid is not undone again."""
    out: list[dict[str, Any]] = []
    upto: int | None = None
    for c in commits:  # newest first
        if upto is not None and int(c["version"]) > upto:
            continue
        if c["operation"] == "RESTORE":
            restored = (c["operationParameters"] or {}).get("version")  # None when restored by timestamp
            upto = int(restored) if restored is not None else upto
            continue
        out.append(c)
    return out


def night_model(user_metadata: str | None) -> str | None:
    """The model a commit's ``night`` names (``dt=D model=V``), or None for an unnamed commit."""
    found = re.search(r"(?:^|\s)model=(\S+)", user_metadata or "")
    return found.group(1) if found else None


def check_gates(staged: DataFrame, gates: Gates, previous_rows: int | None) -> GateReport:
    """Evaluate every gate on the staged rows in one aggregation (a pure DataFrame check)."""
    aggs = [F.count(F.lit(1)).alias("rows")]
    for col in gates.vector_columns:
        # A NaN computed in pandas arrives as a null element (Arrow's from_pandas conversion),
        # so a missing value counts as broken, like NaN and inf.
        flat = F.flatten(col) if col == "interests" else F.col(col)
        broken = F.col(col).isNull() | F.exists(flat, lambda x: x.isNull() | F.isnan(x) | (F.abs(x) == float("inf")))
        aggs.append(F.sum(F.when(broken, 1).otherwise(0)).alias(f"bad_{col}"))
    if gates.unit_norm_column:
        norm = F.sqrt(
            F.aggregate(
                gates.unit_norm_column,
                F.lit(0.0).cast("double"),
                lambda acc, x: acc + x.cast("double") * x.cast("double"),
            )
        )
        error = F.coalesce(F.abs(norm - 1.0), F.lit(float("nan")))  # a null norm fails too
        aggs.append(F.max(error).alias("norm_error"))
    if gates.coverage_filter:
        aggs.append(F.sum(F.when(F.expr(gates.coverage_filter), 1).otherwise(0)).alias("covered"))
    stats = staged.agg(*aggs).collect()[0].asDict()
    rows = int(stats["rows"])
    out: dict[str, GateResult] = {}
    for col in gates.vector_columns:
        bad = int(stats[f"bad_{col}"] or 0)
        out[f"finite_{col}"] = GateResult(bad == 0, f"{bad} row(s) with NaN, inf or missing values in {col}")
    if gates.unit_norm_column:
        err = float(stats["norm_error"]) if stats["norm_error"] is not None else 0.0
        out["unit_norm"] = GateResult(
            err <= gates.norm_tolerance,  # False for NaN too
            f"max |norm - 1| = {err:.2e} (tolerance {gates.norm_tolerance:g})",
        )
    if gates.coverage_filter and gates.expected_rows:
        share = int(stats["covered"] or 0) / gates.expected_rows
        out["coverage"] = GateResult(
            share >= gates.min_coverage,
            f"{share:.1%} of {gates.expected_rows:,} active users (minimum {gates.min_coverage:.0%})",
        )
    if gates.max_row_change is not None and previous_rows:
        change = abs(rows - previous_rows) / previous_rows
        out["row_change"] = GateResult(
            change <= gates.max_row_change,
            f"{rows:,} rows vs {previous_rows:,} in the previous partition ({change:.0%}, "
            f"limit {gates.max_row_change:.0%})",
        )
    if rows == 0:
        out["not_empty"] = GateResult(False, "no rows")
    return GateReport(rows, out)


def _remove_orphans(day: str, referenced: set[str]) -> None:
    """Folders of earlier runs for one date that were never published (failed gate, killed run).

    Run folders are compared by name (``run=<id>``, unique per run), which does not depend on how
    the metastore spells the filesystem URI.
    """
    keep = {r.rstrip("/").rsplit("/", 1)[-1] for r in referenced if r}
    for name in storage.list_dirs(day):
        if name.startswith("run=") and name not in keep:
            storage.delete(f"{day}/{name}")
