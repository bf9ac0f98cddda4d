"""The one SparkSession factory every job and test uses.

It keeps the metastore (embedded Derby) and warehouse inside the run's data folder so runs do not
scatter ``metastore_db/`` and ``derby.log`` into the working directory, pins the session time zone
to UTC so dates mean the same everywhere, and points Python workers at this interpreter.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from pyspark.sql import SparkSession

from interest import logs
from interest.config import Config
from interest.errors import UserError
from interest.java import driver_options, require_java

log = logging.getLogger(__name__)


def job_group(stage: str, date: str, step: str) -> str:
    """The Spark job group of one step of one stage's run (what the Spark UI and status tracker show)."""
    return f"interest:{stage}:{date}:{step}"


class JobLabels:
    """Labels the Spark jobs of a stage run step by step: ``label("write sequences")`` puts every
    job that follows in the group ``interest:<stage>:<date>:<step>`` with the description
    ``interest <stage> <date>: <step>``, so the Spark UI says which step of which run is working.
    Each step's wall time (until the next label) is logged and kept in ``seconds``: the stage's
    profile by step."""

    def __init__(self, spark: SparkSession, stage: str, date: str) -> None:
        self.context, self.stage, self.date = spark.sparkContext, stage, date
        self.seconds: dict[str, float] = {}
        self._step: tuple[str, float] | None = None

    def __call__(self, step: str) -> None:
        self._close()
        self._step = (step, time.perf_counter())
        self.context.setJobGroup(job_group(self.stage, self.date, step), f"interest {self.stage} {self.date}: {step}")

    def _close(self) -> None:
        if self._step is not None:
            step, started = self._step
            self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - started
            log.info(f"{self.stage} {self.date}: {step} took {self.seconds[step]:.1f} s")
            self._step = None

    def clear(self) -> None:
        """Later jobs of this thread are no longer this stage's."""
        self._close()
        context: Any = self.context
        context.setLocalProperty("spark.jobGroup.id", None)
        context.setLocalProperty("spark.job.description", None)


def jvm(spark: SparkSession) -> Any:
    """The driver JVM's py4j view (untyped: py4j has no stubs)."""
    context: Any = spark.sparkContext
    return context._jvm


def launched_by_spark_submit() -> bool:
    """spark-submit starts the JVM first and hands Python its gateway port."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(cfg: Config, app_name: str | None = None) -> SparkSession:
    """Build (or return) the SparkSession for a job described by ``cfg``."""
    from interest import storage

    storage.configure_from(cfg)
    archive = ""  # a JVM launched here (not by spark-submit) can map the class archive
    if not launched_by_spark_submit():
        archive = driver_options(require_java(), str(cfg.spark.conf.get("spark.driver.extraJavaOptions", "")))
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    warehouse = cfg.paths.warehouse
    metastore = embedded_metastore_dir(cfg)
    builder = SparkSession.builder.appName(app_name or "interest")
    if not launched_by_spark_submit():
        builder = builder.master(cfg.spark.master)
    defaults = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.warehouse.dir": warehouse,
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.parquet.compression.codec": "snappy",
        # a text that a custom ingest.ts_format cannot read is unparseable (a quarantined row);
        # Spark's default stops the job on the first text its pre-3.0 parser would have read
        "spark.sql.legacy.timeParserPolicy": "CORRECTED",
        # The jobs cache frames only for the length of one stage (MEMORY_AND_DISK, spilling when
        # short): compressing those column batches doubled what a cache cost (BENCHMARKS.md).
        "spark.sql.inMemoryColumnarStorage.compressed": "false",
        # Spark's [Stage n:===>] bars redraw a terminal line; in a log file they are spam
        "spark.ui.showConsoleProgress": str(os.isatty(2)).lower(),
        "spark.hadoop.javax.jdo.option.ConnectionURL": (
            f"jdbc:derby:;databaseName={metastore}/metastore_db;create=true"
        ),
        "spark.hadoop.datanucleus.schema.autoCreateAll": "true",
        "spark.hadoop.hive.metastore.schema.verification": "false",
    }
    if not launched_by_spark_submit():
        defaults["spark.pyspark.python"] = sys.executable
    settings = {**defaults, **cfg.spark.conf}
    if archive:
        settings["spark.driver.extraJavaOptions"] = (
            f"{settings.get('spark.driver.extraJavaOptions', '')} {archive}".strip()
        )
    if cfg.spark.master.startswith("local") and not launched_by_spark_submit():
        # Spark's 200 shuffle partitions are sized for clusters: on one machine each stage would
        # pay for 200 near-empty tasks.
        settings.setdefault("spark.sql.shuffle.partitions", "8")
        # Delta rebuilds a table's state over 50 partitions and Spark lists files over up to
        # 10,000 tasks: sized for clusters. On one machine the shuffle's partitions are plenty,
        # and each publish and retention step stops paying for dozens of near-empty tasks.
        for key in (
            "spark.databricks.delta.snapshotPartitions",
            "spark.sql.sources.parallelPartitionDiscovery.parallelism",
        ):
            settings.setdefault(key, settings.get("spark.sql.shuffle.partitions", "8"))
    if on_s3(cfg) and not launched_by_spark_submit():  # Spark reads s3a:// through hadoop-aws
        settings["spark.jars.packages"] = add_package(settings.get("spark.jars.packages"), s3a_package())
    if cfg.embed.table_format == "delta":
        settings.update(delta_settings(settings.get("spark.jars.packages")))
    for key, value in settings.items():
        builder = builder.config(key, str(value))
    spark = builder.enableHiveSupport().getOrCreate()
    if cfg.embed.table_format == "delta":
        require_delta(spark)
    if on_s3(cfg):
        require_s3a(spark)
    _derby_home(spark, metastore)
    if not logs.verbose():
        _quiet_loggers(spark)
    spark.sparkContext.setLogLevel("INFO" if logs.verbose() else "WARN")  # --verbose shows it all
    return spark


def delta_package() -> str:
    """The Delta jar matching the installed delta-spark (the two must move together)."""
    from importlib.metadata import version

    return f"io.delta:delta-spark_2.12:{version('delta-spark')}"


def add_package(packages: str | None, package: str) -> str:
    """``spark.jars.packages`` with ``package`` in it once (another version of it replaced)."""
    group_artifact = package.rsplit(":", 1)[0] + ":"
    kept = [p for p in (packages or "").split(",") if p and not p.startswith(group_artifact)]
    return ",".join([*kept, package])


def hadoop_version() -> str:
    """The Hadoop version pyspark ships (its client jar's), which hadoop-aws must match."""
    import glob

    import pyspark

    homes = [os.path.dirname(pyspark.__file__), os.environ.get("SPARK_HOME", "")]  # the second under spark-submit
    jars = [j for home in homes if home for j in glob.glob(os.path.join(home, "jars", "hadoop-client-api-*.jar"))]
    if not jars:
        raise UserError("pyspark ships no hadoop-client-api jar: cannot tell which hadoop-aws matches it")
    return os.path.basename(jars[0])[len("hadoop-client-api-") : -len(".jar")]


def s3a_package() -> str:
    """Hadoop's S3A connector at pyspark's Hadoop version (it brings the AWS SDK bundle it was built with)."""
    return f"org.apache.hadoop:hadoop-aws:{hadoop_version()}"


def on_s3(cfg: Config) -> bool:
    """Does any place of ``cfg.paths`` lie on S3 (``s3a://``)?"""
    return any(cfg.paths.resolve(key).startswith("s3a://") for key in ("root", "models", "checkpoints", "logs"))


class S3ANotAvailableError(UserError, RuntimeError):
    """A path is on s3a:// but the session has no hadoop-aws jars."""


def _require_class(spark: SparkSession, name: str, error: Callable[[], Exception]) -> None:
    """Raise ``error()`` unless the JVM class ``name`` is on the driver's classpath (a missing jar)."""
    try:
        jvm(spark).org.apache.spark.util.Utils.classForName(name, True, False)
    except Exception:
        raise error() from None


def require_s3a(spark: SparkSession) -> None:
    """Fail at start-up, in one line, when Hadoop's S3A classes are not on the driver's classpath."""

    def missing() -> Exception:
        return S3ANotAvailableError(
            f"paths are on s3a:// but Hadoop's S3A connector is not on the classpath: submit with "
            f"--packages {s3a_package()} (pyspark's Hadoop version)"
        )

    _require_class(spark, "org.apache.hadoop.fs.s3a.S3AFileSystem", missing)


def delta_settings(packages: str | None) -> dict[str, str]:
    """Session settings for Delta tables: the jar from Maven (as clusters take JVM packages), the
    SQL extension (MERGE, RESTORE, VACUUM) and the catalog that makes the metastore know Delta.

    Under spark-submit the JVM is already running, so the jar must come from ``--packages``;
    ``require_delta`` says so if it did not.
    """
    return {
        "spark.jars.packages": add_package(packages, delta_package()),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    }


class DeltaNotAvailableError(UserError, RuntimeError):
    """embed.table_format is delta but the session has no Delta jars."""


def require_delta(spark: SparkSession) -> None:
    """Fail at start-up, in one line, when the Delta classes are not on the driver's classpath."""
    message = (
        f"embed.table_format is delta but Delta Lake is not on the classpath: submit with "
        f"--packages {delta_package()} (and the settings in README, 'Table format'), or set "
        f"embed.table_format: parquet"
    )
    _require_class(spark, "io.delta.tables.DeltaTable", lambda: DeltaNotAvailableError(message))


def embedded_metastore_dir(cfg: Config) -> str:
    """A local folder for the embedded Derby metastore.

    Derby is local by nature: it takes a plain path, never a URL. ``{root}/metastore`` under a
    ``file://`` root becomes that local path; under a remote root (``hdfs://``, ``s3a://``) the
    metastore gets a folder of its own in the temp directory, one per root, since a cluster
    keeps its tables in a real metastore (``conf/cluster.yaml``).
    """
    import hashlib
    import tempfile

    metastore = cfg.paths.metastore
    if metastore.startswith("file://"):
        return metastore[len("file://") :]
    if "://" not in metastore:
        return metastore
    digest = hashlib.sha1(metastore.encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), "interest-metastore", digest)


# Loggers that warn on every embedded-metastore call about things that are expected locally.
NOISY_LOGGERS = (
    "org.apache.hadoop.hive",
    "hive",
    "org.datanucleus",
    "DataNucleus",
    "org.apache.hadoop.util.NativeCodeLoader",
)


def _quiet_loggers(spark: SparkSession) -> None:
    view = jvm(spark)
    try:
        level = view.org.apache.logging.log4j.Level.ERROR
        for name in NOISY_LOGGERS:
            view.org.apache.logging.log4j.core.config.Configurator.setLevel(name, level)
    except Exception:  # a cluster with another logging backend: keep its settings
        pass


def _derby_home(spark: SparkSession, metastore: str) -> None:
    """Point Derby's home and log into the metastore folder before the Hive client starts.

    The Hive client is created lazily on the first catalog access, so setting the driver JVM's
    system properties here works both when Python starts the JVM and under spark-submit.
    """
    local = metastore  # always a local folder (embedded_metastore_dir)
    os.makedirs(local, exist_ok=True)
    system = jvm(spark).java.lang.System
    system.setProperty("derby.system.home", local)
    system.setProperty("derby.stream.error.file", os.path.join(local, "derby.log"))
