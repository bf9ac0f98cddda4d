"""Spark output helpers over Hadoop's FileSystem API (in the JVM), for file://, hdfs://, s3a://.

Files that are not DataFrames go through ``interest.storage``. The one idea here: a dataset is
written to a hidden staging folder next to its final place and swapped in only when complete, so
a reader never sees half of it and a failed run leaves the previous version in place.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from interest.spark import jvm

# Large enough that one Spark output file is one Parquet row group (Petastorm shards by group).
ROW_GROUP_BYTES = 256 * 1024 * 1024


def _jvm_path(spark: SparkSession, path: str) -> tuple[Any, Any]:
    hpath = jvm(spark).org.apache.hadoop.fs.Path(path)
    context: Any = spark.sparkContext
    fs = hpath.getFileSystem(context._jsc.hadoopConfiguration())
    return fs, hpath


def exists(spark: SparkSession, path: str) -> bool:
    fs, hpath = _jvm_path(spark, path)
    return bool(fs.exists(hpath))


def delete(spark: SparkSession, path: str) -> None:
    fs, hpath = _jvm_path(spark, path)
    if fs.exists(hpath):
        fs.delete(hpath, True)


def replace_atomically(spark: SparkSession, final: str, write: Callable[[str], object]) -> None:
    """Write into a staging folder with ``write(staging)``, then swap it into ``final``.

    The staging folder is a hidden sibling (``_staging-…``), which Spark's readers and partition
    discovery skip. If ``write`` fails, ``final`` is untouched and the staging folder is removed.
    """
    parent, _, name = final.rstrip("/").rpartition("/")
    recover(spark, final)
    token = uuid.uuid4().hex[:12]
    staging = f"{parent}/_staging-{name}-{token}"
    trash = f"{parent}/_trash-{name}-{token}"
    try:
        write(staging)
    except BaseException:
        delete(spark, staging)
        raise
    fs, final_path = _jvm_path(spark, final)
    _, staging_path = _jvm_path(spark, staging)
    _, trash_path = _jvm_path(spark, trash)
    fs.mkdirs(final_path.getParent())
    had_old = fs.exists(final_path)
    if had_old and not fs.rename(final_path, trash_path):
        delete(spark, staging)
        raise OSError(f"could not move the previous {final} aside")
    if not fs.rename(staging_path, final_path):
        if had_old:
            fs.rename(trash_path, final_path)
        raise OSError(f"could not move {staging} into place at {final}")
    if had_old:
        fs.delete(trash_path, True)


def recover(spark: SparkSession, final: str) -> None:
    """Clean up after a run killed inside ``replace_atomically`` for ``final``: a staging folder
    it left is removed; if it died between moving the old version aside and the new one in, the
    old version is put back, so ``final`` is again the previous output, whole."""
    parent, _, name = final.rstrip("/").rpartition("/")
    fs, final_path = _jvm_path(spark, final)
    for prefix in ("_staging", "_trash"):
        _, pattern = _jvm_path(spark, f"{parent}/{prefix}-{name}-*")
        for status in fs.globStatus(pattern) or []:
            left = status.getPath()
            if prefix == "_trash" and not fs.exists(final_path):
                fs.rename(left, final_path)
            else:
                fs.delete(left, True)


def write_parquet_groups(
    df: DataFrame, path: str, rows: int, rows_per_group: int, min_groups: int, sort_key: str
) -> int:
    """Write ``df`` as Parquet with one row group per file and enough files to shard.

    Rows are hash-partitioned by ``sort_key`` and sorted inside each file, so the same input
    gives the same files' contents on every run. Returns the number of files asked for.
    """
    groups = max(min_groups, math.ceil(rows / max(rows_per_group, 1)))
    (
        df.repartition(groups, sort_key)
        .sortWithinPartitions(sort_key)
        .write.mode("overwrite")
        .option("parquet.block.size", ROW_GROUP_BYTES)
        .parquet(path)
    )
    return groups
