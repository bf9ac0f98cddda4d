"""Two nights in a row: both partitions kept, next-day quality against the truth, MLflow runs; and the alerts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from embed_runs import (
    PREV,
    cfg_for,
    table_rows,
)

from interest.nightly import QualityAlertError, run_nightly
from interest.serving.publish import Table

from conftest import DATE


@pytest.mark.slow
def test_two_days_keep_both_partitions_and_items_keep_their_index(spark, planted):
    # A high minimum count leaves items out on the first day that qualify on the second.
    cfg = cfg_for(planted, "nightly_days", "sessionize.min_item_count=60", "nightly.train=warm")
    run_nightly(spark, cfg, PREV)
    cfg2 = cfg_for(planted, "nightly_days", "sessionize.min_item_count=60", "nightly.train=reuse")
    day2 = run_nightly(spark, cfg2, DATE)
    assert Table(spark, cfg.embed.database, cfg.embed.table).dates() == [PREV, DATE]
    v1 = pd.read_parquet(f"{planted}/nightly_days/vocab/dt={PREV}").set_index("item_idx").item_id
    v2 = pd.read_parquet(f"{planted}/nightly_days/vocab/dt={DATE}").set_index("item_idx").item_id
    assert len(v2) > len(v1)  # the vocabulary grew
    pd.testing.assert_series_equal(v2.loc[v1.index], v1)  # and old items kept their index
    assert v2.index.max() == len(v2) + 1  # new items appended after the old ones
    # the reused model knows the old items only: they keep their vectors, new items are unknown
    assert "reused the previous model" in day2.model.action
    i1 = table_rows(spark, cfg, PREV, cfg.embed.item_table).set_index("item_id")
    i2 = table_rows(spark, cfg, DATE, cfg.embed.item_table).set_index("item_id")
    assert set(i2.index) == set(v2) and set(i2[~i2.is_cold_start].index) == set(i1.index)
    assert not i1.is_cold_start.any() and i2.is_cold_start.sum() == len(v2) - len(v1)
    for item in i1.index[:20]:
        np.testing.assert_array_equal(i1.embedding[item], i2.embedding[item])
    # cold items start from their category: for users of an interest, the new items of that
    # category score above the other new items
    cold = i2[i2.is_cold_start]
    users = table_rows(spark, cfg, DATE).set_index("user_id")
    recs = table_rows(spark, cfg, DATE, cfg.embed.recommendations_table).set_index("user_id")
    vectors = np.stack(cold.embedding.to_numpy())  # [C, D]
    wins, pairs = 0, 0
    for user, interest in recs.top_interest.dropna().items():
        mine = (cold.category == interest).to_numpy()
        if not mine.any() or mine.all():
            continue
        scores = vectors @ np.asarray(users.embedding[user])  # [C]
        wins += int((scores[mine][:, None] > scores[~mine][None, :]).sum())
        pairs += int(mine.sum() * (~mine).sum())
    assert pairs > 1000 and wins / pairs > 0.8, (wins, pairs)
    assert day2.drift.users_in_both > 0 and 0 < day2.drift.mean_cosine <= 1.0
    assert Path(day2.report_files["drift_figure"]).stat().st_size > 1000
    # tomorrow's truth: one daily_quality row per date; DATE's scores PREV's recommendations
    # exactly as this independent reading of the same files does
    quality = spark.table(f"nightly_days.{cfg.quality.table}").toPandas().sort_values("dt").reset_index(drop=True)
    assert list(quality.dt) == [PREV, DATE] and quality.users[0] == 0  # nothing published before PREV
    expected = _next_day_truth(spark, cfg, planted, PREV, DATE)
    row = quality.iloc[1]
    assert row.previous_date == PREV and row.users == expected["users"] > 50
    for key in ("hr", "ndcg", "popularity_hr", "popularity_ndcg"):
        assert row[key] == pytest.approx(expected[key], abs=1e-9), key
    assert row.hr > row.popularity_hr  # the planted interests carry over to the next day
    assert day2.quality.hr == pytest.approx(row.hr) and Path(day2.report_files["quality_figure"]).stat().st_size > 1000
    assert "Next-day quality of" in Path(day2.report_files["markdown"]).read_text()
    # the same figures per history length and cold versus warm, in the report
    got = {g["segment"]: g for g in day2.quality.segments}
    assert set(got) == set(expected["segments"]) and "warm" in got
    for name, figures in expected["segments"].items():
        for key, value in figures.items():
            assert got[name][key] == pytest.approx(value, abs=1e-9), (name, key)
    assert sum(g["users"] for n, g in got.items() if n.startswith("history")) == row.users
    assert f"| segment (at {PREV}) | users | HR@10 |" in Path(day2.report_files["markdown"]).read_text()
    # an alert: a bound the night cannot meet flags the row and the report, and fails the job when asked to
    strict = cfg_for(
        planted,
        "nightly_days",
        "sessionize.min_item_count=60",
        "nightly.train=reuse",
        "quality.min_hr=1.01",
        "quality.fail_on_alert=true",
    )
    with pytest.raises(QualityAlertError, match=r"next-day HR@10 0\.\d+ is below quality.min_hr 1.01"):
        run_nightly(spark, strict, DATE)
    again = spark.table(f"nightly_days.{cfg.quality.table}").where(f"dt = '{DATE}'").toPandas()
    assert len(again) == 1 and "below quality.min_hr" in again.alerts[0][0]  # replaced, not appended
    assert "**Alerts:**" in Path(day2.report_files["markdown"]).read_text()
    _check_mlflow_runs(cfg, day2)


def _check_mlflow_runs(cfg, day2) -> None:
    """Each night is an MLflow run with its timings, gates, drift and next-day quality; the
    training run has its parameters, one metric step per epoch, the test metrics and the model."""
    from mlflow import MlflowClient

    from interest.tracking import tracking_uri

    client = MlflowClient(tracking_uri(cfg))
    nightly = client.get_experiment_by_name("interest/nightly")
    runs = client.search_runs([nightly.experiment_id], "tags.table = 'nightly_days.user_interest_embeddings'")
    by_date = {}
    for run in runs:
        by_date.setdefault(run.data.tags["date"], []).append(run)
    assert sorted(by_date) == [PREV, DATE] and len(by_date[DATE]) == 2  # the strict re-run is a run too
    night = next(r for r in by_date[DATE] if r.data.tags["alerts"] == "none")
    m = night.data.metrics
    assert night.info.status == "FINISHED" and m["timings_s.total"] > 0 and m["counts.published"] == day2.embed.rows
    assert m["next_day.hr"] == pytest.approx(day2.quality.hr) and m["drift.mean_cosine"] == pytest.approx(
        day2.drift.mean_cosine
    )
    assert m[f"gate.nightly_days.{cfg.embed.table}.finite_embedding"] == 1.0
    train = client.get_experiment_by_name("interest/train")
    [trained] = client.search_runs(
        [train.experiment_id], f"tags.date = '{PREV}' and tags.model_dir LIKE '%nightly_days/models%'"
    )
    assert trained.data.params["model.dim"] == "32" and trained.data.params["train.batch_size"] == "64"
    losses = client.get_metric_history(trained.info.run_id, "loss")
    assert sorted(h.step for h in losses) == list(range(1, len(losses) + 1)) and len(losses) >= 1
    assert trained.data.metrics["test.full_ndcg_at_10"] > 0 and trained.data.tags["model_dir"].endswith(
        trained.data.tags["version"]
    )


def _next_day_truth(spark, cfg, planted: Path, prev: str, date: str) -> dict[str, Any]:
    """Next-day HR@10/NDCG@10 of ``prev``'s recommendations on ``date``'s steps, in plain pandas;
    also per history length at ``prev`` and for cold-start against warm users."""
    recs = table_rows(spark, cfg, prev, cfg.embed.recommendations_table)
    top = {u: [r["item_id"] for r in rs][:10] for u, rs in zip(recs.user_id, recs.recommendations)}
    vocab = pd.read_parquet(f"{planted}/nightly_days/vocab/dt={prev}")
    names = vocab.set_index("item_idx").item_id
    popular = list(vocab.sort_values(["count", "item_id"], ascending=[False, True]).item_id)
    infer = pd.read_parquet(f"{planted}/nightly_days/sequences/dt={prev}/infer")
    seen = {u: set(names.reindex(h).dropna()) for u, h in zip(infer.user_id, infer.history_idx)}
    steps = dict(zip(infer.user_id, infer.n_steps))
    day = pd.read_parquet(f"{planted}/nightly_days/sequences/dt={date}/day")
    ranks, groups = [], []
    for user, items in zip(day.user_id, day["items"]):
        if user not in top:
            continue
        new = [i for i in items if i not in seen.get(user, set())]
        if not new:
            continue
        pop = [i for i in popular if i not in seen.get(user, set())][:10]
        ranks.append(
            (top[user].index(new[0]) + 1 if new[0] in top[user] else 0, pop.index(new[0]) + 1 if new[0] in pop else 0)
        )
        n = steps.get(user, 0)
        bins = ((1, 5), (6, 20), (21, 50), (51, 200))
        length = "history 0" if n == 0 else next((f"history {a}-{b}" for a, b in bins if a <= n <= b), "history >200")
        groups.append((length, "cold start" if n < cfg.embed.cold_start_min_steps else "warm"))
    r = np.array(ranks)

    def ndcg(col: np.ndarray) -> float:
        return float(np.mean(np.where(col > 0, 1.0 / np.log2(np.maximum(col, 1) + 1.0), 0.0)))

    def figures(rows: np.ndarray) -> dict[str, float]:
        return {
            "users": len(rows),
            "hr": float(np.mean(rows[:, 0] > 0)),
            "ndcg": ndcg(rows[:, 0]),
            "popularity_hr": float(np.mean(rows[:, 1] > 0)),
            "popularity_ndcg": ndcg(rows[:, 1]),
        }

    names_of = sorted({g for pair in groups for g in pair})
    segments = {g: figures(r[[g in pair for pair in groups]]) for g in names_of}
    return {**figures(r), "segments": segments}


def test_quality_alerts_fire_on_a_low_value_a_drop_or_drift_and_not_on_too_few_users():
    from interest.config import QualityConfig
    from interest.serving.quality import NextDayQuality, alerts

    q = QualityConfig(min_hr=0.2, max_drop=0.3, max_top_interest_changed=0.5)
    ok = NextDayQuality(DATE, PREV, 100, 0.30, 0.2, 0.1, 0.05, 10, 0.9, 0.1)
    assert alerts(ok, {"dt": PREV, "hr": 0.32}, q) == []
    dropped = alerts(ok, {"dt": PREV, "hr": 0.50}, q)
    assert dropped == [f"next-day HR@10 fell from 0.5000 ({PREV}) to 0.3000, more than quality.max_drop 30%"]
    low = NextDayQuality(DATE, PREV, 100, 0.10, 0.05, 0.1, 0.05, 10, 0.9, 0.7)
    assert [a.split(" ")[0] for a in alerts(low, None, q)] == ["next-day", "top"]
    few = NextDayQuality(DATE, PREV, 5, 0.0, 0.0, 0.1, 0.05, 10)
    assert alerts(few, {"dt": PREV, "hr": 0.5}, q) == []  # five users say nothing
