"""Reading raw click logs (Parquet, CSV, JSON lines, MovieLens ``u.data``, item sequences as text
lines) into one canonical shape.

Canonical raw events: ``user_id``, ``item_id``, ``event_type``, ``ts_raw`` (the text as logged),
``category``, ``dt`` (the source partition, when there is one), ``_corrupt_record`` (the line,
when the reader could not parse it) and ``ingest_order`` (where the row sits in the source: file,
split, row), which breaks ties in event time the way the rows arrived, never by an identifier.
Everything is a string here: typing happens in validation, so that a value that does not parse
becomes a reject with a reason instead of a lost row.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from interest import storage
from interest.config import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, IngestConfig
from interest.errors import UserError

CANONICAL = ["user_id", "item_id", "event_type", "ts_raw", "category", "dt", "_corrupt_record", "ingest_order"]
CORRUPT = "_corrupt_record"
INGEST_ORDER = "ingest_order"
MOVIELENS_COLUMNS = ["user_id", "item_id", "rating", "ts"]
# sequence_lines: event k of a user (from 0) happens at day k after the epoch: one step and one
# session each under any session gap below a day
SYNTHETIC_STEP_S = 86400


class IngestError(UserError, ValueError):
    """The source cannot be read as configured (missing path, missing columns)."""


def _string_schema(names: list[str]) -> T.StructType:
    return T.StructType([T.StructField(n, T.StringType()) for n in [*names, CORRUPT]])


def read_source(spark: SparkSession, cfg: IngestConfig, path: str) -> DataFrame:
    """Read the raw source as configured; text formats keep malformed lines in ``_corrupt_record``."""
    reader = spark.read.options(**cfg.options)
    permissive = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}
    try:
        if cfg.format == "parquet":
            return reader.parquet(path)
        if cfg.format == "json":
            names = [c for c in _mapped_columns(cfg) if c]
            return reader.options(**permissive).schema(_string_schema(names)).json(path)
        if cfg.format == "csv":
            header = spark.read.options(**{"header": "true", **cfg.options}).csv(path).columns
            return (
                reader.options(**{"header": "true", **cfg.options, **permissive})
                .schema(_string_schema(header))
                .csv(path)
            )
        if cfg.format == "movielens":
            return (
                reader.options(sep="\t", header="false", **permissive)
                .schema(_string_schema(MOVIELENS_COLUMNS))
                .csv(path)
            )
        if cfg.format == "sequence_lines":
            return reader.text(path)  # one column, "value": the line
    except Exception as exc:  # Spark raises AnalysisException for a missing path
        if "PATH_NOT_FOUND" in str(exc) or "Path does not exist" in str(exc):
            raise IngestError(f"raw events path does not exist: {path}") from None
        raise
    raise IngestError(f"unknown ingest.format {cfg.format!r}")


@contextmanager
def partition_values_as_text(spark: SparkSession) -> Iterator[None]:
    """Frames read inside take partition values (``dt=2026-11-26``) as the folder's text.

    The canonical rows carry ``dt`` as text anyway: inferred as a date, it was formatted back
    into text on every row (0.7 of the 4.6 s that reading and validating 10M rows took). A frame
    keeps the partition types it was created with, so the setting matters only while it is made."""
    key = "spark.sql.sources.partitionColumnTypeInference.enabled"
    before = spark.conf.get(key) or "true"  # Spark's default
    spark.conf.set(key, "false")
    try:
        yield
    finally:
        spark.conf.set(key, before)


def with_ingest_order(df: DataFrame) -> DataFrame:
    """Add ``ingest_order``: struct(file, block, row), the position of each row in its source file.

    Must be applied to the file scan itself, before any shuffle: ``file`` and ``block`` (the byte
    offset of the split) come from Spark's ``_metadata`` column, and ``row`` is
    ``monotonically_increasing_id``, which increases along a split inside one task. Ordering by
    the struct therefore follows the files' own row order whatever the partitioning, and is the
    same on every run over the same files. Filter partitions *before* this: a non-deterministic
    column stops Spark from pushing later filters down to the scan.
    """
    return df.withColumn(
        INGEST_ORDER,
        F.struct(
            F.col("_metadata.file_path").alias("file"),
            F.col("_metadata.file_block_start").alias("block"),
            F.monotonically_increasing_id().alias("row"),
        ),
    )


def _mapped_columns(cfg: IngestConfig) -> list[str | None]:
    return list(cfg.columns.values())


def to_canonical(df: DataFrame, cfg: IngestConfig, event_type_default: str) -> DataFrame:
    """Source columns -> canonical string columns, by the configured column mapping; a source
    without an event type column gets ``event_type_default`` (the funnel's first stage)."""
    if cfg.format == "sequence_lines":
        return sequence_lines_to_canonical(df, event_type_default)
    cols = dict(cfg.columns)
    if cfg.format == "movielens":
        cols = {**{name: name for name in REQUIRED_COLUMNS}, "event_type": None, "category": None}
    missing = [cols[name] for name in REQUIRED_COLUMNS if cols[name] not in df.columns]
    # optional columns may be absent: category becomes null, the event type the default one
    for name in OPTIONAL_COLUMNS:
        cols[name] = cols[name] if cols[name] in df.columns else None
    if missing:
        raise IngestError(
            f"raw events lack column(s) {missing}; present: "
            f"{sorted(c for c in df.columns if c not in (CORRUPT, INGEST_ORDER))}. "
            "Map them with ingest.columns={<field>: <source column>}."
        )

    def text(name: str | None) -> Column:
        if name is None:
            return F.lit(None).cast("string")
        return F.col(f"`{name}`").cast("string")

    event_type = text(cols["event_type"]) if cols["event_type"] else F.lit(event_type_default)
    ts_type = df.schema[str(cols["ts"])].dataType  # required: a name, checked above
    ts_raw = (
        F.date_format(F.col(f"`{cols['ts']}`"), "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'")
        if isinstance(ts_type, (T.TimestampType, T.TimestampNTZType))
        else text(cols["ts"])
    )
    return df.select(
        text(cols["user_id"]).alias("user_id"),
        text(cols["item_id"]).alias("item_id"),
        event_type.alias("event_type"),
        ts_raw.alias("ts_raw"),
        text(cols["category"]).alias("category"),
        (F.col("dt").cast("string") if "dt" in df.columns else F.lit(None).cast("string")).alias("dt"),
        (F.col(CORRUPT) if CORRUPT in df.columns else F.lit(None).cast("string")).alias(CORRUPT),
        F.col(INGEST_ORDER) if INGEST_ORDER in df.columns else no_ingest_order().alias(INGEST_ORDER),
    )


def sequence_lines_to_canonical(lines: DataFrame, event_type: str) -> DataFrame:
    """Text lines of item ids in order -> canonical rows, one per item, with synthetic times.

    A line is ``user item item ...`` (one user per line) or ``user item`` (one pair per line); a
    user's events are numbered in the order the lines and the items within them come in the files
    (``ingest_order``, then the position in the line), never by id, and event k gets the epoch
    second ``k * SYNTHETIC_STEP_S`` as its raw time. A line with a user and no item is kept whole
    as a malformed line; blank lines carry nothing and are skipped, as Spark's CSV reader does.
    """
    from pyspark.sql import Window

    text = F.trim(F.col("value"))
    tokens = F.split(text, r"\s+")  # [user, item, item, ...]
    bad = F.size(tokens) < 2
    items = F.slice(tokens, 2, F.greatest(F.size(tokens) - 1, F.lit(0)))
    exploded = lines.where(text != "").select(
        tokens[0].alias("user_id"),
        F.when(bad, F.col("value")).alias(CORRUPT),
        INGEST_ORDER,
        F.posexplode_outer(items).alias("pos", "item_id"),  # a malformed line: one row, no item
    )
    order = Window.partitionBy("user_id", F.col(CORRUPT).isNull()).orderBy(INGEST_ORDER, "pos")
    step = F.row_number().over(order) - 1
    return exploded.select(
        "user_id",
        "item_id",
        F.lit(event_type).alias("event_type"),
        F.when(F.col(CORRUPT).isNull(), (step * SYNTHETIC_STEP_S).cast("string")).alias("ts_raw"),
        F.lit(None).cast("string").alias("category"),
        F.lit(None).cast("string").alias("dt"),
        CORRUPT,
        INGEST_ORDER,
    )


# MovieLens 100K's genres, in the order of u.item's flag columns (u.genre)
MOVIELENS_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


def read_item_categories(spark: SparkSession, cfg: IngestConfig, path: str) -> DataFrame:
    """``item_id, category`` (strings) from ``ingest.item_categories``: MovieLens' ``u.item``
    (its genre flags joined by ``|``: "Action|Comedy"; only "unknown": null) or a table of the
    source's format with the ``columns`` names for item id and category."""
    if cfg.format == "movielens":
        names = [
            "item_id",
            "title",
            "release",
            "video_release",
            "url",
            *[f"g{i}" for i in range(len(MOVIELENS_GENRES))],
        ]
        schema = T.StructType([T.StructField(n, T.StringType()) for n in names])
        try:
            items = spark.read.options(sep="|", header="false", encoding="ISO-8859-1").schema(schema).csv(path)
            items.limit(1).collect()
        except Exception as exc:
            raise IngestError(f"ingest.item_categories cannot be read at {path}: {str(exc).splitlines()[0]}") from None
        flags = [F.when(F.col(f"g{i}") == "1", F.lit(g)) for i, g in enumerate(MOVIELENS_GENRES) if g != "unknown"]
        genres = F.concat_ws("|", *flags)  # concat_ws skips the nulls
        return items.select("item_id", F.when(genres != "", genres).alias("category"))
    item_id, category = cfg.columns["item_id"], cfg.columns["category"]
    if not category:
        raise IngestError("ingest.item_categories needs ingest.columns.category: the column that holds it")
    reader = spark.read.options(**cfg.options)
    try:
        if cfg.format == "parquet":
            items = reader.parquet(path)
        elif cfg.format == "json":
            items = reader.json(path)
        else:
            items = reader.options(header="true").csv(path)
    except Exception as exc:
        raise IngestError(f"ingest.item_categories cannot be read at {path}: {str(exc).splitlines()[0]}") from None
    missing = [n for n in (item_id, category) if n not in items.columns]
    if missing:
        raise IngestError(
            f"ingest.item_categories at {path} lacks column(s) {missing}; present: {sorted(items.columns)}"
        )
    return items.select(
        F.col(f"`{item_id}`").cast("string").alias("item_id"),
        F.col(f"`{category}`").cast("string").alias("category"),
    )


def with_item_categories(events: DataFrame, items: DataFrame) -> DataFrame:
    """Canonical events whose category is null take their item's from ``items`` (one row per item:
    the smallest category where the table repeats an item)."""
    lookup = F.broadcast(items.groupBy("item_id").agg(F.min("category").alias("_item_category")))
    joined = events.join(lookup, "item_id", "left")
    return joined.select(
        *[F.coalesce("category", "_item_category").alias("category") if c == "category" else c for c in events.columns]
    )


def no_ingest_order() -> Column:
    """A typed null ``ingest_order`` for frames that were not read from files."""
    return F.lit(None).cast("struct<file:string,block:bigint,row:bigint>")


@dataclass(frozen=True)
class CorruptFile:
    """A source file that cannot be read, and why."""

    path: str
    bytes: int
    error: str


@dataclass(frozen=True)
class Footer:
    """What a Parquet file's footer says: its schema (as text) and how many rows it holds."""

    schema: str
    rows: int


def parquet_footers(files: list[str], threads: int = 16) -> tuple[dict[str, Footer], list[CorruptFile]]:
    """Each file's footer, and the files whose footer cannot be read (a truncated upload, another
    format). Only footers are read: one small read per file, done in parallel."""
    import pyarrow.parquet as pq

    def check(path: str) -> Footer | CorruptFile:
        fs, inner = storage.arrow_filesystem(path)
        try:
            meta = pq.read_metadata(inner, filesystem=fs)
            return Footer(str(meta.schema.to_arrow_schema().remove_metadata()), int(meta.num_rows))
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a broken file
            size = fs.get_file_info(inner).size or 0
            return CorruptFile(path, int(size), str(exc).splitlines()[0][:300])

    with ThreadPoolExecutor(max_workers=threads) as pool:
        found = dict(zip(files, pool.map(check, files)))
    footers = {path: got for path, got in found.items() if isinstance(got, Footer)}
    return footers, [got for got in found.values() if isinstance(got, CorruptFile)]


def schema_groups(schemas: dict[str, str]) -> list[list[str]]:
    """Files grouped by identical schema, in path order: more than one group means the source
    drifted (a column added, renamed, or of another type on some days)."""
    groups: dict[str, list[str]] = {}
    for path in sorted(schemas):
        groups.setdefault(schemas[path], []).append(path)
    return list(groups.values())


DT_PARTITION = re.compile(r"/dt=(\d{4}-\d{2}-\d{2})/")


def source_files(path: str) -> tuple[list[str], bool]:
    """The data files under a source path, listed without Spark (so that no file is opened before
    it is checked), and whether they are partitioned by ``dt=YYYY-MM-DD`` folders."""
    try:
        files = storage.list_files(path)
    except FileNotFoundError:
        raise IngestError(f"raw events path does not exist: {path}") from None
    return files, any(DT_PARTITION.search(f) for f in files)


def in_window(files: list[str], window: tuple[str | None, str]) -> list[str]:
    """The files whose ``dt=`` partition lies in ``window`` (start, end); files outside any
    partition folder are kept."""
    start, end = window
    out = []
    for path in files:
        match = DT_PARTITION.search(path)
        if match is None or ((start is None or match[1] >= start) and match[1] <= end):
            out.append(path)
    return out


def in_partition_window(df: DataFrame, start: str | None, end: str) -> DataFrame:
    """Keep the ``dt`` partitions inside [start, end] (partition pruning: other days are not read)."""
    dt = F.col("dt").cast("string")
    return df.where(dt <= end if start is None else dt.between(start, end))
