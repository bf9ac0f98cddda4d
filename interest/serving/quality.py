"""Tomorrow's truth: how well yesterday's published recommendations predicted today's clicks.

The nightly of D scores the recommendations published for the previous date P (normally D-1)
against the steps users took on D (``sequences/dt=D/day``, written by sessionize):

- users: those with a recommendation row at P and at least one step on D that is new to them
  (not in their history at P, which the recommendations already excluded);
- the target is the first such new item on D; HR@k and NDCG@k of P's top-k list for it;
- the popularity baseline ranks P's most counted items (``vocab/dt=P``), minus the user's history.

It is the offline proxy of online quality, one row per date in the ``daily_quality`` table,
plotted over dates in the report; alerts fire on a low value, a day-over-day drop, or drift.
``run_quality`` is the nightly's quality stage: drift, the next-day figures, alerts, the stored row.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from interest.config import Config, QualityConfig
from interest.layout import Layout
from interest.scoring.segments import HISTORY_BINS, bin_label
from interest.serving import publish

log = logging.getLogger(__name__)

DDL = (
    "previous_date STRING, users BIGINT, hr DOUBLE, ndcg DOUBLE, popularity_hr DOUBLE, popularity_ndcg DOUBLE, "
    "k INT, mean_cosine DOUBLE, top_interest_changed DOUBLE, alerts ARRAY<STRING>"
)


@dataclass(frozen=True)
class NextDayQuality:
    """One date's row of ``daily_quality`` (metrics are None when there was nothing to score)."""

    date: str
    previous_date: str | None
    users: int
    hr: float | None
    ndcg: float | None
    popularity_hr: float | None
    popularity_ndcg: float | None
    k: int
    mean_cosine: float | None = None
    top_interest_changed: float | None = None
    alerts: list[str] = field(default_factory=list)
    note: str = ""
    # the same figures per user segment: history length at the previous date, cold or warm users
    segments: list[dict[str, Any]] = field(default_factory=list)


def _ranks(frame: DataFrame, k: int, popular: list[str]) -> DataFrame:
    """Add ``target`` (the first new item of the day), ``rank`` in the model's top-k and
    ``pop_rank`` in the popularity top-k (1-based; 0 = missed)."""
    new_today = F.filter("items", lambda x: ~F.array_contains("seen", x))
    popular_unseen = F.slice(
        F.filter(F.array(*[F.lit(i) for i in popular]), lambda x: ~F.array_contains("seen", x)), 1, k
    )
    return (
        frame.withColumn("target", F.element_at(new_today, 1))
        .where(F.col("target").isNotNull())
        .withColumn("_top", F.slice("rec_ids", 1, k))
        .withColumn("_pop", popular_unseen)
        .withColumn("rank", F.expr("array_position(_top, target)"))  # the Python API takes a literal only
        .withColumn("pop_rank", F.expr("array_position(_pop, target)"))
        .drop("_top", "_pop")
    )


def _ndcg(rank: Column) -> Column:
    return F.when(rank > 0, 1.0 / F.log2(rank.cast("double") + 1.0)).otherwise(0.0)


def _figures() -> list[Column]:
    """The aggregates of one row of figures over ranked users."""
    return [
        F.count(F.lit(1)).alias("users"),
        F.avg((F.col("rank") > 0).cast("double")).alias("hr"),
        F.avg(_ndcg(F.col("rank"))).alias("ndcg"),
        F.avg((F.col("pop_rank") > 0).cast("double")).alias("popularity_hr"),
        F.avg(_ndcg(F.col("pop_rank"))).alias("popularity_ndcg"),
    ]


def history_bin(n_steps: Column) -> Column:
    """The history-length segment of ``interest.scoring.segments`` as a Spark column."""
    out = F.lit("history 0")  # no steps at the previous date (a known user without events)
    for low, high in reversed(HISTORY_BINS):
        inside = (n_steps >= low) & (n_steps <= high) if high is not None else n_steps >= low
        out = F.when(inside, F.lit(f"history {bin_label(low, high)}")).otherwise(out)
    return out


def segment_figures(ranked: DataFrame, cold_min_steps: int) -> list[dict[str, Any]]:
    """The figures per history length (steps at the previous date) and for cold-start users (fewer
    than ``cold_min_steps`` steps, as the embed job flags them) against warm ones."""
    order = ["history 0", *[f"history {bin_label(lo, hi)}" for lo, hi in HISTORY_BINS], "cold start", "warm"]
    by = ranked.select(
        "*",
        F.explode(
            F.array(
                history_bin(F.col("n_steps")),
                F.when(F.col("n_steps") < cold_min_steps, "cold start").otherwise("warm"),
            )
        ).alias("segment"),
    )
    rows = {r["segment"]: r.asDict() for r in by.groupBy("segment").agg(*_figures()).collect()}
    return [rows[name] for name in order if name in rows]


def next_day_quality(spark: SparkSession, cfg: Config, layout: Layout) -> NextDayQuality:
    """Score the latest recommendations published before the layout's date against its steps."""
    e, k, date = cfg.embed, cfg.eval.k, layout.date
    empty = NextDayQuality(date, None, 0, None, None, None, None, k)
    earlier = [d for d in publish.Table(spark, e.database, e.recommendations_table).dates() if d < date]
    if not earlier:
        return dataclasses.replace(empty, note="no recommendations published before this date")
    prev = earlier[-1]
    then, now = layout.at(prev).sessionized, layout.sessionized
    try:
        day = spark.read.parquet(now.day)
        history = spark.read.parquet(then.infer).select("user_id", "history_idx", "n_steps")
        vocab = spark.read.parquet(then.vocab).select("item_idx", "item_id", "count")
    except Exception as exc:  # an input of an older layout or removed by hand: say so, do not fail the night
        log.warning(f"next-day quality skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        return dataclasses.replace(empty, previous_date=prev, note="inputs missing")
    seen = (
        history.select("user_id", F.explode("history_idx").alias("item_idx"))
        .join(vocab, "item_idx")
        .groupBy("user_id")
        .agg(F.collect_set("item_id").alias("seen"))
    )
    recs = (
        spark.table(publish.table_name(e.database, e.recommendations_table))
        .where(F.col("dt") == prev)
        .select("user_id", F.transform("recommendations", lambda r: r["item_id"]).alias("rec_ids"))
    )
    max_history = int(history.agg(F.max(F.size("history_idx"))).collect()[0][0] or 0)
    popular = [r.item_id for r in vocab.orderBy(F.desc("count"), "item_id").limit(k + max_history).collect()]
    both = (
        recs.join(day, "user_id")
        .join(seen, "user_id", "left")
        .join(history.select("user_id", "n_steps"), "user_id", "left")
        .withColumn("seen", F.coalesce("seen", F.array().cast("array<string>")))
        .withColumn("n_steps", F.coalesce("n_steps", F.lit(0)))
    )
    ranked = _ranks(both, k, popular).cache()
    try:
        row = ranked.agg(*_figures()).collect()[0]
        segments = segment_figures(ranked, e.cold_start_min_steps) if row["users"] else []
    finally:
        ranked.unpersist()
    return NextDayQuality(
        date,
        prev,
        int(row["users"]),
        row["hr"],
        row["ndcg"],
        row["popularity_hr"],
        row["popularity_ndcg"],
        k,
        segments=segments,
    )


MIN_ALERT_USERS = 20  # fewer users active on both days than this: too few to alert on


def alerts(today: NextDayQuality, before: dict[str, Any] | None, q: QualityConfig) -> list[str]:
    """What a person should look at today, in words (empty: nothing)."""
    out = []
    if today.users >= MIN_ALERT_USERS and today.hr is not None:
        if q.min_hr is not None and today.hr < q.min_hr:
            out.append(f"next-day HR@{today.k} {today.hr:.4f} is below quality.min_hr {q.min_hr}")
        prev_hr = (before or {}).get("hr")
        if q.max_drop is not None and prev_hr and today.hr < prev_hr * (1 - q.max_drop):
            out.append(
                f"next-day HR@{today.k} fell from {prev_hr:.4f} ({(before or {}).get('dt')}) to {today.hr:.4f}, "
                f"more than quality.max_drop {q.max_drop:.0%}"
            )
    changed = today.top_interest_changed
    if q.max_top_interest_changed is not None and changed is not None and changed > q.max_top_interest_changed:
        out.append(
            f"top interest changed for {changed:.1%} of users, more than quality.max_top_interest_changed "
            f"{q.max_top_interest_changed:.0%}"
        )
    return out


def previous_row(spark: SparkSession, cfg: Config, date: str) -> dict[str, Any] | None:
    """The latest ``daily_quality`` row before ``date`` that scored any users, if any."""
    name = publish.table_name(cfg.embed.database, cfg.quality.table)
    if not spark.catalog.tableExists(name):
        return None
    publish.require_files(spark, cfg.embed.database, cfg.quality.table)
    rows = spark.table(name).where((F.col("dt") < date) & (F.col("users") > 0)).orderBy(F.desc("dt")).limit(1).collect()
    return rows[0].asDict() if rows else None


def history(spark: SparkSession, cfg: Config) -> list[dict[str, Any]]:
    """Every ``daily_quality`` row, oldest first (for the report's plot)."""
    name = publish.table_name(cfg.embed.database, cfg.quality.table)
    if not spark.catalog.tableExists(name):
        return []
    publish.require_files(spark, cfg.embed.database, cfg.quality.table)
    return [r.asDict() for r in spark.table(name).orderBy("dt").collect()]


def publish_quality(spark: SparkSession, cfg: Config, row: NextDayQuality, location: str) -> None:
    """Write ``row`` as the date's partition of ``daily_quality`` (replacing a re-run's)."""
    e = cfg.embed
    table = publish.Table(spark, e.database, cfg.quality.table, location, e.table_format)
    table.ensure(DDL)
    values = {c: getattr(row, c) for c in ("previous_date", "users", "hr", "ndcg", "popularity_hr", "popularity_ndcg")}
    values.update(
        k=row.k, mean_cosine=row.mean_cosine, top_interest_changed=row.top_interest_changed, alerts=row.alerts
    )
    frame = spark.createDataFrame([values], schema=DDL)
    table.publish(row.date, frame, publish.Gates())


@dataclass(frozen=True)
class Drift:
    """How the published embeddings moved since the previous published date."""

    previous_date: str
    users_in_both: int
    mean_cosine: float | None
    cosine_quantiles: dict[float, float]
    top_interest_changed: float | None  # share of users whose dominant recommended category changed


def drift(spark: SparkSession, cfg: Config, date: str) -> tuple[Drift | None, np.ndarray]:
    """How today's embeddings moved since the previous published date (None on the first day),
    and each user's cosine (for the report's histogram).

    mean cosine: between each user's embedding today and at the previous date (users in both);
    top interest changed: share of those users whose dominant recommended category changed.
    """
    e = cfg.embed
    dates = publish.Table(spark, e.database, e.table).dates()
    earlier = [d for d in dates if d < date]
    if date not in dates or not earlier:
        return None, np.zeros(0)
    prev = earlier[-1]
    users = spark.table(f"`{e.database}`.`{e.table}`")
    recs = spark.table(f"`{e.database}`.`{e.recommendations_table}`")
    today = users.where(F.col("dt") == date).select("user_id", F.col("embedding").alias("a"))
    before = users.where(F.col("dt") == prev).select("user_id", F.col("embedding").alias("b"))
    both = today.join(before, "user_id")
    cosine = F.aggregate(
        F.zip_with("a", "b", lambda x, y: x * y), F.lit(0.0).cast("double"), lambda acc, v: acc + v.cast("double")
    )
    frame: Any = both.select(cosine.alias("cos")).toPandas()
    sims = np.asarray(frame["cos"], dtype=np.float64)  # [users in both]
    ti = (
        recs.where(F.col("dt") == date)
        .select("user_id", F.col("top_interest").alias("t1"))
        .join(recs.where(F.col("dt") == prev).select("user_id", F.col("top_interest").alias("t0")), "user_id")
    )
    changed = ti.agg(F.avg((F.col("t1") != F.col("t0")).cast("double")).alias("c")).collect()[0]["c"]
    moved = Drift(
        previous_date=prev,
        users_in_both=int(len(sims)),
        mean_cosine=float(np.mean(sims)) if len(sims) else None,
        cosine_quantiles={q: float(np.quantile(sims, q)) for q in (0.1, 0.5, 0.9)} if len(sims) else {},
        top_interest_changed=float(changed) if changed is not None else None,
    )
    return moved, sims


@dataclass(frozen=True)
class QualityResult:
    """The quality stage of one night: the next-day figures (stored in ``daily_quality``, with their
    alerts), the drift since the previous date, and what the report draws."""

    next_day: NextDayQuality
    drift: Drift | None
    cosines: np.ndarray  # [users in both dates]
    history: list[dict[str, Any]]  # every daily_quality row, oldest first


def run_quality(spark: SparkSession, cfg: Config, date: str) -> QualityResult:
    """Score yesterday's recommendations on today's steps, measure the drift, check the alerts,
    store the date's ``daily_quality`` row."""
    layout = Layout.of(cfg, date)
    moved, cosines = drift(spark, cfg, date)
    scored = next_day_quality(spark, cfg, layout)
    if moved:
        scored = dataclasses.replace(
            scored, mean_cosine=moved.mean_cosine, top_interest_changed=moved.top_interest_changed
        )
    found = alerts(scored, previous_row(spark, cfg, date), cfg.quality)
    scored = dataclasses.replace(scored, alerts=found)
    publish_quality(spark, cfg, scored, layout.table(cfg.quality.table))
    if scored.users:
        log.info(
            f"next-day quality of {scored.previous_date}'s recommendations: HR@{scored.k} {scored.hr:.4f}, "
            f"NDCG@{scored.k} {scored.ndcg:.4f} over {scored.users:,} users "
            f"(popularity {scored.popularity_hr:.4f} / {scored.popularity_ndcg:.4f})"
        )
    else:
        log.info(f"next-day quality: nothing to score ({scored.note or 'no user active on both days'})")
    for alert in found:
        log.warning(f"ALERT: {alert}")
    return QualityResult(scored, moved, cosines, history(spark, cfg))
