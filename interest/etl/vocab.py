"""The item vocabulary: item id <-> index, frequency-ordered, stable, and able to grow.

Index 0 is padding and 1 the unknown item (rare or unseen), so real items start at 2. The order
(count descending, then item id) makes indices identical for identical data. Given the previous
vocabulary, existing items keep their index and new items are appended, so a warm-started model's
embedding rows keep meaning the same item.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from interest.schema import FIRST_ITEM, PAD, UNKNOWN  # noqa: F401  (re-exported)

VOCAB_COLUMNS = ["item_idx", "item_id", "category", "count"]


def item_counts(steps: DataFrame, counted: Column | None = None) -> DataFrame:
    """Per item: the steps that count (``count``; ``counted``, a condition on a step: all by
    default), the smallest category among them, and all its steps (``steps``)."""
    counted = F.lit(True) if counted is None else counted
    # counted by (item, category) first: counts are fixed-width, so Spark aggregates them by
    # hashing, with partial counts before its shuffle. A min of a string in the same aggregate
    # makes it sort every step by item instead (SortAggregate), a third of the stage's
    # vocabulary step at 10M events; here the min is taken over the few categories per item.
    by_category = steps.groupBy("item_id", "category").agg(
        F.count(F.when(counted, 1)).alias("count"), F.count(F.lit(1)).alias("steps")
    )
    return by_category.groupBy("item_id").agg(
        F.sum("count").alias("count"),
        F.min(F.when(F.col("count") > 0, F.col("category"))).alias("category"),
        F.sum("steps").alias("steps"),
    )


def build_vocab(steps: DataFrame, min_count: int, previous: DataFrame | None = None) -> DataFrame:
    """Items seen at least ``min_count`` times get an index; ``previous`` indices are kept."""
    return vocab_of_counts(item_counts(steps), min_count, previous)


def vocab_of_counts(counts: DataFrame, min_count: int, previous: DataFrame | None = None) -> DataFrame:
    """:func:`build_vocab` from :func:`item_counts` already made (an item counted 0 times gets no
    new index)."""
    eligible = counts.where(F.col("count") >= min_count)
    if previous is None:
        return _numbered(eligible, FIRST_ITEM)
    prev = previous.select("item_id", "item_idx", F.col("category").alias("_prev_category"))
    kept = prev.join(counts, "item_id", "left").select(
        F.col("item_idx").cast("int"),
        "item_id",
        F.coalesce("category", "_prev_category").alias("category"),
        F.coalesce("count", F.lit(0)).cast("long").alias("count"),
    )
    top = previous.agg(F.max("item_idx")).collect()[0][0]
    start = max(int(top), FIRST_ITEM - 1) if top is not None else FIRST_ITEM - 1
    new = _numbered(eligible.join(prev, "item_id", "left_anti"), start + 1)
    return kept.unionByName(new)


def _numbered(items: DataFrame, first: int) -> DataFrame:
    """Index items by count (descending), then id, starting at ``first``.

    A global sort plus zipWithIndex numbers rows in sorted order without pulling every item
    into one partition (which a window without a partition would).
    """
    ordered = items.orderBy(F.desc("count"), F.asc("item_id")).select("item_id", "category", "count")
    indexed = ordered.rdd.zipWithIndex().map(lambda pair: (pair[1] + first, *pair[0]))
    schema = "item_idx int, item_id string, category string, count long"
    return items.sparkSession.createDataFrame(indexed, schema).select(*VOCAB_COLUMNS)


def apply_vocab(steps: DataFrame, vocab: DataFrame) -> DataFrame:
    """Add ``item_idx``; items outside the vocabulary map to UNKNOWN instead of failing."""
    lookup = F.broadcast(vocab.select("item_id", "item_idx"))
    return steps.join(lookup, "item_id", "left").withColumn(
        "item_idx", F.coalesce(F.col("item_idx"), F.lit(UNKNOWN)).cast("int")
    )
