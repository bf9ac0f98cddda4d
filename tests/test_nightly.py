"""The embed job, atomic publishing behind gates, and the nightly refresh (idempotent per date)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from interest.models.encoders import build_encoder
from interest.models.export import (
    ModelNotFoundError,
    find_model_before,
    load_model,
    model_as_of,
    model_versions,
    new_version,
    resolve_model_dir,
    save_model,
    warm_start,
)
from interest.nightly import QualityAlertError, run_nightly
from interest.serving.embed import EmbedInputError, run_embed
from interest.serving.publish import PublishGateError, dates, version
from interest.serving.publish import history as table_history

from conftest import DATE, PLANTED, ROOT, TABLES, copy_planted, delta_digests, make_config, run_logs

PREV = "2026-11-25"
FAST = [*PLANTED, "train.epochs=2", "train.patience=5"]


def cfg_for(planted: Path, database: str, *extra: str):
    """A config on the planted data with its own models and table database (tests share one metastore)."""
    return make_config(
        planted,
        *FAST,
        f"embed.database={database}",
        f"paths.models='{{root}}/models_{database}'",
        f"paths.checkpoints='{{root}}/ckpt_{database}'",
        f"paths.sequences='{{root}}/sequences_{database}'",
        f"paths.vocab='{{root}}/vocab_{database}'",
        f"paths.reports='{{root}}/reports_{database}'",
        *extra,
    )


def table_rows(spark, cfg, date: str, table: str | None = None) -> pd.DataFrame:
    name = f"`{cfg.embed.database}`.`{table or cfg.embed.table}`"
    frame = spark.sql(f"SELECT * FROM {name} WHERE dt = '{date}'").toPandas()
    return frame.sort_values(frame.columns[0]).reset_index(drop=True)


@pytest.mark.slow
def test_two_days_keep_both_partitions_and_items_keep_their_index(spark, planted):
    # A high minimum count leaves items out on the first day that qualify on the second.
    cfg = cfg_for(planted, "nightly_days", "sessionize.min_item_count=60", "nightly.retrain=true")
    run_nightly(spark, cfg, PREV)
    cfg2 = cfg_for(planted, "nightly_days", "sessionize.min_item_count=60", "nightly.retrain=false")
    day2 = run_nightly(spark, cfg2, DATE)
    assert dates(spark, cfg.embed.database, cfg.embed.table) == [PREV, DATE]
    v1 = pd.read_parquet(f"{planted}/vocab_nightly_days/dt={PREV}").set_index("item_idx").item_id
    v2 = pd.read_parquet(f"{planted}/vocab_nightly_days/dt={DATE}").set_index("item_idx").item_id
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
        "nightly.retrain=false",
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
        [train.experiment_id], f"tags.date = '{PREV}' and tags.model_dir LIKE '%models_nightly_days%'"
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
    vocab = pd.read_parquet(f"{planted}/vocab_nightly_days/dt={prev}")
    names = vocab.set_index("item_idx").item_id
    popular = list(vocab.sort_values(["count", "item_id"], ascending=[False, True]).item_id)
    infer = pd.read_parquet(f"{planted}/sequences_nightly_days/dt={prev}/infer")
    seen = {u: set(names.reindex(h).dropna()) for u, h in zip(infer.user_id, infer.history_idx)}
    steps = dict(zip(infer.user_id, infer.n_steps))
    day = pd.read_parquet(f"{planted}/sequences_nightly_days/dt={date}/day")
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

    q = QualityConfig(min_hr=0.2, max_drop=0.3, max_top_interest_changed=0.5, min_users=20)
    ok = NextDayQuality(DATE, PREV, 100, 0.30, 0.2, 0.1, 0.05, 10, 0.9, 0.1)
    assert alerts(ok, {"dt": PREV, "hr": 0.32}, q) == []
    dropped = alerts(ok, {"dt": PREV, "hr": 0.50}, q)
    assert dropped == [f"next-day HR@10 fell from 0.5000 ({PREV}) to 0.3000, more than quality.max_drop 30%"]
    low = NextDayQuality(DATE, PREV, 100, 0.10, 0.05, 0.1, 0.05, 10, 0.9, 0.7)
    assert [a.split(" ")[0] for a in alerts(low, None, q)] == ["next-day", "top"]
    few = NextDayQuality(DATE, PREV, 5, 0.0, 0.0, 0.1, 0.05, 10)
    assert alerts(few, {"dt": PREV, "hr": 0.5}, q) == []  # five users say nothing


def test_warm_start_copies_old_rows_and_starts_new_ones_from_their_category():
    args = dict(max_len=8, dim=8, heads=2, blocks=1, memory_slots=2)
    old = build_encoder("memory", vocab_size=10, **args)
    new = build_encoder("memory", vocab_size=14, **args)
    fresh_tail = np.asarray(new.item_table)[10:].copy()
    grown = warm_start(new, old)
    assert any("items" in name for name in grown)
    np.testing.assert_array_equal(np.asarray(new.item_table)[:10], np.asarray(old.item_table))
    np.testing.assert_array_equal(np.asarray(new.item_table)[10:], fresh_tail)
    # with the new vocabulary, new items start from their category's trained items
    vocab = pd.DataFrame({"item_idx": range(2, 14), "category": list("aabbaabbabxy"), "count": 1})
    again = build_encoder("memory", vocab_size=14, **args)
    warm_start(again, old, vocab)
    table, trained = np.asarray(again.item_table), np.asarray(old.item_table)
    np.testing.assert_allclose(table[10], trained[[2, 3, 6, 7]].mean(axis=0), rtol=1e-6)  # category a
    np.testing.assert_allclose(table[11], trained[[4, 5, 8, 9]].mean(axis=0), rtol=1e-6)  # category b
    np.testing.assert_allclose(table[12], trained[2:10].mean(axis=0), rtol=1e-6)  # unknown category: the prior
    with pytest.raises(ValueError, match="cannot warm start"):
        warm_start(build_encoder("self_attention", vocab_size=14, **args), old)


def test_lineage_follows_data_dates_not_the_order_of_runs(tmp_path):
    encoder = build_encoder("self_attention", vocab_size=10, max_len=8, dim=8, heads=2, blocks=1)
    vocab = pd.DataFrame({"item_idx": [2], "item_id": ["a"], "category": ["c"], "count": [1]})
    root, kind = str(tmp_path / "models"), "self_attention"

    def export(date: str) -> str:
        return save_model(encoder, vocab, {"date": date}, {}, root, new_version(date))

    d3 = export("2026-11-03")
    d1 = export("2026-11-01")  # a backfill after a later date ...
    assert resolve_model_dir(root, kind) == d3  # ... never moves LATEST backwards
    d2 = export("2026-11-02")
    assert resolve_model_dir(root, kind) == d3
    assert [find_model_before(root, kind, d) for d in ("2026-11-01", "2026-11-02", "2026-11-03", "2026-11-09")] == [
        None,
        d1,
        d2,
        d3,
    ]
    d2_again = export("2026-11-02")  # a re-run of an old date: the newest of that date wins
    assert find_model_before(root, kind, "2026-11-03") == d2_again != d2
    d4 = export("2026-11-04")
    assert resolve_model_dir(root, kind) == d4
    assert model_as_of(root, kind, "2026-11-02") == d2_again and model_as_of(root, kind, "2026-11-07") == d4
    with pytest.raises(ModelNotFoundError, match="up to 2026-10-01"):
        model_as_of(root, kind, "2026-10-01")


@pytest.fixture(scope="module")
def embedded(spark, planted):
    """A published dt=DATE partition (database 'embed_gates') and the model behind it."""
    cfg = cfg_for(planted, "embed_gates", "embed.cold_start_min_steps=8")
    report = run_nightly(spark, cfg, DATE)
    return cfg, report


@pytest.mark.slow
def test_a_nan_blocks_the_publish_and_says_why(spark, embedded, tmp_path, fault_matrix):
    cfg, report = embedded
    before = version(spark, cfg.embed.database, cfg.embed.table)
    rows_before = table_rows(spark, cfg, DATE)
    model = load_model(report.model.path)
    weights = model.encoder.get_weights()
    table_index = next(i for i, w in enumerate(model.encoder.weights) if "items" in w.path)
    weights[table_index][2:6] = np.nan  # the most popular items: many users have them
    model.encoder.set_weights(weights)
    broken = save_model(model.encoder, model.vocab, model.config, model.metrics, str(tmp_path), "broken")
    with pytest.raises(
        PublishGateError,
        match=r"user_interest_embeddings dt=2026-11-26: "
        r"finite_embedding: \d+ row\(s\) with NaN",
    ) as info:
        run_embed(spark, cfg, DATE, broken)
    assert info.value.report.gates["finite_embedding"].ok is False
    assert version(spark, cfg.embed.database, cfg.embed.table) == before  # no commit
    pd.testing.assert_frame_equal(table_rows(spark, cfg, DATE), rows_before)
    staged = Path(cfg.paths.resolve("warehouse")) / f"{cfg.embed.database}.db" / cfg.embed.table / "_staging"
    assert not list(staged.rglob("*.parquet"))  # the rejected run left nothing staged
    fault_matrix("a model that writes NaN", runs=1)


@pytest.mark.slow
def test_cold_start_users_and_fallback_for_known_users_without_events(spark, embedded, tmp_path):
    cfg, report = embedded
    known = tmp_path / "users"
    infer = pd.read_parquet(f"{cfg.paths.resolve('sequences')}/dt={DATE}/infer")
    extra = ["never-seen-1", "never-seen-2"]
    pd.DataFrame({"user_id": [*infer.user_id[:5], *extra]}).to_parquet(known.with_suffix(".parquet"))
    out = run_embed(
        spark,
        make_config(
            cfg.paths.root,
            *FAST,
            f"embed.database={cfg.embed.database}",
            f"paths.sequences={cfg.paths.resolve('sequences')}",
            f"paths.vocab={cfg.paths.resolve('vocab')}",
            f"embed.users_table={known.with_suffix('.parquet')}",
            "embed.cold_start_min_steps=8",
        ),
        DATE,
        report.model.path,
    )
    assert out.fallback == 2 and out.rows == len(infer) + 2
    rows = table_rows(spark, cfg, DATE).set_index("user_id")
    for user in extra:
        assert rows.is_cold_start[user] and rows.n_events[user] == 0 and len(rows.top_items[user]) == 0
        assert np.linalg.norm(rows.embedding[user]) == pytest.approx(1.0, abs=1e-5)
    few = infer[infer.n_steps < 8].user_id
    assert len(few) and rows.is_cold_start[few].all()  # short histories: embedded, and flagged
    assert not rows.is_cold_start[infer[infer.n_steps >= 8].user_id].any()
    recs = table_rows(spark, cfg, DATE, cfg.embed.recommendations_table).set_index("user_id")
    popular = pd.read_parquet(f"{cfg.paths.resolve('vocab')}/dt={DATE}").nlargest(3, "count").item_id.tolist()
    assert [r["item_id"] for r in recs.recommendations["never-seen-1"][:3]] == popular
    user = infer.user_id.iloc[0]
    hist_vocab = pd.read_parquet(f"{cfg.paths.resolve('vocab')}/dt={DATE}").set_index("item_idx").item_id
    seen = set(hist_vocab.reindex(infer.set_index("user_id").history_idx[user]).dropna())
    assert not seen & {r["item_id"] for r in recs.recommendations[user]}  # only new items


def test_sequences_indexed_with_another_vocabulary_are_refused(spark, embedded, tmp_path, fault_matrix):
    cfg, report = embedded
    model = load_model(report.model.path)
    shuffled = model.vocab.copy()
    shuffled["item_id"] = shuffled["item_id"].iloc[::-1].to_numpy()
    other = save_model(model.encoder, shuffled, model.config, model.metrics, str(tmp_path), "other")
    with pytest.raises(EmbedInputError, match="index items differently .* --base-vocab"):
        run_embed(spark, cfg, DATE, other)
    with pytest.raises(EmbedInputError, match="no inference rows for 2020-01-01"):
        run_embed(spark, cfg, "2020-01-01", report.model.path)
    vocab = Path(cfg.paths.resolve("vocab")) / f"dt={DATE}"
    vocab.rename(vocab.with_name("moved"))
    try:
        with pytest.raises(EmbedInputError, match=f"no vocabulary for {DATE} at .*dt={DATE}: run jobs/sessionize.py"):
            run_embed(spark, cfg, DATE, report.model.path)
    finally:
        vocab.with_name("moved").rename(vocab)
    args = {**model.encoder.args, "max_len": model.encoder.args["max_len"] + 5}
    longer = save_model(
        build_encoder(model.encoder.kind, **args), model.vocab, model.config, model.metrics, str(tmp_path), "longer"
    )
    with pytest.raises(
        EmbedInputError,
        match=r"hold 30 steps per row but model .*longer was trained with "
        r"max_len 35: sessionize 2026-11-26 with --set sessionize.max_len=35",
    ):
        run_embed(spark, cfg, DATE, longer)
    assert model.encoder.args["n_event_types"] > 2  # the planted funnel has more event types
    fewer = save_model(
        build_encoder(model.encoder.kind, **{**model.encoder.args, "n_event_types": 2}),
        model.vocab,
        model.config,
        model.metrics,
        str(tmp_path),
        "fewer",
    )
    with pytest.raises(
        EmbedInputError, match=r"use event_type_idx up to \d+ but model .*fewer knows 2: sessionize.event_types"
    ):
        run_embed(spark, cfg, DATE, fewer)
    fault_matrix("a model and the data that disagree", runs=5)


def _check_published(spark, cfg, planted: Path, night) -> None:
    """One night's tables as a downstream reader needs them: a row per user, unit vectors, one
    model version, and explanations that name items the user really has in their history."""
    rows = table_rows(spark, cfg, DATE)
    assert "trained" in night.model.action
    assert len(rows) == night.embed.rows == night.sessionize.users
    assert np.allclose([np.linalg.norm(v) for v in rows.embedding], 1.0, atol=1e-5)
    assert rows.user_id.is_unique and rows.model_version.nunique() == 1
    assert all(len(t) <= cfg.embed.top_items for t in rows.top_items)
    seqs = pd.read_parquet(f"{planted}/sequences_backfill/dt={DATE}/infer")
    vocab = pd.read_parquet(f"{planted}/vocab_backfill/dt={DATE}").set_index("item_idx").item_id
    history = {u: set(vocab.reindex(h).dropna()) for u, h in zip(seqs.user_id, seqs.history_idx)}
    assert all({t["item_id"] for t in tops} <= history[u] for u, tops in zip(rows.user_id, rows.top_items))
    report_md = Path(night.report_files["markdown"]).read_text()
    assert f"Nightly refresh {DATE}" in report_md and "Gates:" in report_md
    assert len(table_rows(spark, cfg, DATE, cfg.embed.item_table)) == night.sessionize.vocab_size - 2


@pytest.mark.slow
def test_backfill_in_order_then_rerun_out_of_order_gives_the_same_tables(spark, planted, log_lines):
    """Three nights in date order, then each run again, out of order: the same tables exactly, the
    same models (a re-run reuses the date's model), and one commit per run."""
    from chispa import assert_df_equality

    from interest.nightly import BackfillError, run_backfill

    cfg = cfg_for(planted, "backfill")
    dates = ["2026-11-24", PREV, DATE]
    with pytest.raises(BackfillError, match="no raw partition for 2026-11-27 under .*; nothing was run"):
        run_backfill(spark, cfg, DATE, "2026-11-27")
    assert not spark.catalog.tableExists(f"backfill.{cfg.embed.table}")  # nothing was published
    lines = log_lines
    nights = run_backfill(spark, cfg, dates[0], dates[-1])
    assert len(nights) == 3
    assert [ln for ln in lines if ln.endswith("/3)")] == [f"{d} ({n}/3)" for n, d in enumerate(dates, 1)]
    _check_published(spark, cfg, planted, nights[-1])
    models = cfg.paths.resolve("models")

    def snapshot() -> dict:
        tables = {
            t: spark.table(f"backfill.{t}").orderBy(*spark.table(f"backfill.{t}").columns[:1], "dt")
            for t in (cfg.embed.table, cfg.embed.item_table, cfg.embed.recommendations_table)
        }
        return {
            "tables": {t: df.toPandas() for t, df in tables.items()},
            "frames": tables,
            "versions": model_versions(models, cfg.model.encoder),
            "latest": resolve_model_dir(models, cfg.model.encoder),
        }

    before = snapshot()
    assert [d for d, _ in before["versions"]] == dates and before["latest"] == before["versions"][-1][1]
    # each date built on the model of the date before it
    trained = [load_model(p).config["init_from"] for _, p in before["versions"]]
    assert trained == [None, before["versions"][0][1], before["versions"][1][1]]
    lines.clear()
    assert run_backfill(spark, cfg, dates[0], dates[-1]) == []  # resumes: all done
    assert all("already done, skipped" in ln for ln in lines)
    for date in (DATE, dates[0], PREV):  # an operator clears and re-runs dates out of order
        again = run_nightly(spark, cfg, date)
        assert "reused the model already trained" in again.model.action
    after = snapshot()
    assert after["versions"] == before["versions"] and after["latest"] == before["latest"]
    for table, frame in after["tables"].items():
        assert sorted(frame.dt.unique()) == dates, table
        assert_df_equality(
            spark.createDataFrame(frame), spark.createDataFrame(before["tables"][table]), ignore_nullable=True
        )
    # each run replaced its dt in one commit per table (replaceWhere), nothing more
    ops = [h["operation"] for h in table_history(spark, cfg.embed.database, cfg.embed.table)]
    assert ops == ["WRITE"] * 6 + ["CREATE TABLE"]


@pytest.mark.slow
def test_a_file_url_root_runs_and_writes_only_under_it(nights):
    """The clean night A ran with ``paths.root=file://...`` (the nights fixture)."""
    table = nights.root / "warehouse" / "default.db" / "user_interest_embeddings"
    assert (table / "_delta_log").is_dir() and list((table / f"dt={DATE}").glob("*.parquet"))
    assert (nights.root / "metastore" / "metastore_db").is_dir()  # Derby got a plain local path
    assert not list(ROOT.glob("file:*")) and not (ROOT / "metastore_db").exists()


def _job(args: list[str], root: Path | str, *extra: str, faults: str = "", **kw) -> subprocess.Popen:
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
from interest.serving.publish import partitions, version
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
if fmt == "parquet":  # the partition's folder
    seen = partitions(spark, "default", "user_interest_embeddings")[date].rstrip("/").rsplit("/", 1)[-1]
else:  # the table version and the data files readers get
    seen = (version(spark, "default", "user_interest_embeddings"), sorted({r.f.rsplit("/", 1)[-1] for r in rows}))
print("SEEN", seen, versions)
"""


def _read_back(root: Path, table_format: str) -> tuple[str, str]:
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


def _metastore_digests(root: Path) -> dict[str, tuple[int, str]]:
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


@pytest.mark.slow
def test_a_python_worker_killed_mid_inference_is_retried_and_the_tables_match_a_clean_run(
    spark, planted, planted_model, nights, tmp_path, fault_matrix
):
    """A Spark Python worker dies inside batch inference (as the kernel's OOM killer leaves it):
    Spark retries the task, the job succeeds, and the three tables equal a clean run's exactly."""
    root = copy_planted(planted, planted_model, tmp_path / "worker")
    marker = tmp_path / "worker-died"
    retried = "spark.master='local[2,2]'"  # local mode retries a failed task only when asked
    faulted = _job(["jobs/embed.py", "--date", DATE], root, retried, faults=f"embed_batch:{marker}")
    out, _ = faulted.communicate(timeout=900)
    assert faulted.returncode == 0, out[-3000:]
    assert marker.exists() and "Python worker exited unexpectedly" in run_logs(root)  # the fault really happened
    assert _delta_digests(spark, root) == nights.a
    fault_matrix("a Spark Python worker killed", runs=1, rows_checked=sum(n for n, _ in nights.a.values()))


@pytest.mark.slow
def test_an_executor_jvm_lost_mid_inference_on_the_cluster_is_retried_and_the_tables_match(
    spark, standalone, planted, planted_model, nights, tmp_path, fault_matrix
):
    """An executor JVM of the standalone cluster is killed (SIGKILL, a node gone) while its task
    runs batch inference: the master starts a new executor, Spark runs the lost work again, the
    three tables equal those of a clean run of the same date, and a new session reads them."""
    root = copy_planted(planted, planted_model, tmp_path / "executor")
    marker = tmp_path / "executor-lost"
    sets = [f"paths.root={root}", *FAST, "spark.conf={spark.sql.shuffle.partitions: '4'}"]
    lost = {"spark.executorEnv.INTEREST_FAULTS": f"kill_executor@embed_batch:{marker}"}
    faulted = standalone.run_job("jobs/embed.py", DATE, sets, tmp_path, conf=lost)
    assert faulted.returncode == 0, (faulted.stdout[-3000:], faulted.stderr[-5000:])
    assert marker.exists()  # the fault really happened ...
    assert re.search(r"Executor app-\S+ finished with state EXITED .*exited with code 137", standalone.worker_logs())
    assert "published to default.user_interest_embeddings" in faulted.stdout
    assert _delta_digests(spark, root) == nights.a
    # a new session reads what the cluster job published, through the metastore
    users = pd.read_parquet(root / "sequences" / f"dt={DATE}" / "infer").user_id.nunique()
    rows, seen = _read_back(root, "delta")
    assert rows == f"ROWS {users} {users} [32] [1] 5"
    assert seen.endswith(f"['{planted_model.name}']"), seen
    fault_matrix("a Spark executor JVM lost", runs=1, rows_checked=sum(n for n, _ in nights.a.values()))


@pytest.mark.slow
def test_an_unreachable_metastore_is_one_retryable_line_and_publishes_nothing(nights, fault_matrix):
    """The Hive metastore does not answer (a remote metastore down): the embed job stops before
    inference with exit 75 and one line naming it, and the published tables stay as they were."""
    import socket

    root = nights.root  # night A, then B, then rolled back to A: what a reader sees is A's tables
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = _job(
        ["jobs/embed.py", "--date", DATE],
        root,
        "spark.conf={spark.ui.enabled: 'false', spark.hadoop.hive.metastore.uris: 'thrift://127.0.0.1:"
        + str(port)
        + "', spark.hadoop.hive.metastore.connect.retries: '1'}",
    )
    out, _ = down.communicate(timeout=900)
    assert down.returncode == 75, out[-3000:]
    [line] = [ln for ln in out.splitlines() if ln.startswith("error")]
    assert line.startswith(
        f"error (worth a retry) [embed dt={DATE}]: the Hive metastore is unreachable (thrift://127.0.0.1:{port})"
    )
    assert "Traceback" not in out and "published with model" not in out  # stopped before inference
    assert _metastore_digests(root) == nights.rolled_back == nights.a
    fault_matrix("the metastore unreachable at publish", runs=1, rows_checked=sum(n for n, _ in nights.a.values()))


def _finish(job: subprocess.Popen, code: int = 0, timeout: int = 900) -> str:
    out, _ = job.communicate(timeout=timeout)
    assert job.returncode == code, out[-3000:]
    return out


def _bad_night(planted_model: Path, where: Path) -> str:
    """Another model of the same shape: the planted model's weights moved by noise, so every table
    it publishes differs from the planted model's."""
    model = load_model(str(planted_model))
    rng = np.random.default_rng(7)
    model.encoder.set_weights(
        [w + rng.normal(0.0, 0.5 * (w.std() + 1e-3), w.shape) for w in model.encoder.get_weights()]
    )
    return save_model(model.encoder, model.vocab, model.config, model.metrics, str(where), "bad-night")


@dataclass
class Nights:
    """Clean runs of one date on a root of their own: the planted model's night (A, given the root as
    a ``file://`` URL), then another model's night for the same date (B), then ``jobs/rollback.py``;
    each table's content after each."""

    root: Path
    bad: str  # the other model
    a: dict[str, tuple[int, str]]
    b: dict[str, tuple[int, str]]
    rollback_out: str
    rolled_back: dict[str, tuple[int, str]]


@pytest.fixture(scope="module")
def nights(spark, planted, planted_model, tmp_path_factory) -> Nights:
    """What every fault test of the embed job compares with: clean runs, made once per module."""
    tmp = tmp_path_factory.mktemp("nights")
    root = copy_planted(planted, planted_model, tmp / "clean")
    bad = _bad_night(planted_model, tmp / "other")
    _finish(_job(["jobs/embed.py", "--date", DATE], f"file://{root}"))  # a URL root works as a path does
    a = _delta_digests(spark, root)
    _finish(_job(["jobs/embed.py", "--date", DATE, "--model", bad], root))
    b = _delta_digests(spark, root)
    out = _finish(_job(["jobs/rollback.py"], root))
    return Nights(root, bad, a, b, out, _delta_digests(spark, root))


def _delta_digests(spark, root: Path) -> dict[str, tuple[int, str]]:
    """Per table, (rows, digest of their exact contents) of DATE, read from the Delta logs."""
    return delta_digests(spark, str(root / "warehouse"), DATE)


def _kill_points(spark, root, nights: Nights, tmp_path, points, table_format) -> int:
    """Run the bad night with a kill at each point; after each, every table is the previous
    night's or the new one's, as the point says. Returns the rows compared."""
    compared = 0
    for point, new_tables in points:
        marker = tmp_path / f"marker-{point}"
        job = _job(
            ["jobs/embed.py", "--date", DATE, "--model", nights.bad],
            root,
            f"embed.table_format={table_format}",
            faults=f"die@publish_{point}:{marker}",
        )
        _finish(job, code=137)
        assert marker.exists()  # it died where it was told to
        got = _delta_digests(spark, root) if table_format == "delta" else _metastore_digests(root)
        expected = {t: (nights.b if t in new_tables else nights.a)[t] for t in TABLES}
        assert got == expected, point
        compared += sum(n for n, _ in got.values())
    return compared


@pytest.mark.slow
def test_a_parquet_publish_killed_at_each_point_leaves_every_table_whole(
    spark, planted, planted_model, nights, tmp_path, fault_matrix
):
    """Kill the bad night's publish before the partition swap and right after it: a new reader
    sees each table as the previous night or the new one, compared by content with clean runs of
    both; the next run publishes the new night whole and removes the orphan folders."""
    users = TABLES[0]
    root = copy_planted(planted, planted_model, tmp_path / "kill")
    _finish(_job(["jobs/embed.py", "--date", DATE], root, "embed.table_format=parquet"))
    assert _metastore_digests(root) == nights.a  # the same rows as the clean Delta run
    # staged and gated is the same place as just before the swap here: nothing runs between them
    points = [(f"{users}_commit", ()), (f"{users}_committed", (users,))]
    compared = _kill_points(spark, root, nights, tmp_path, points, "parquet")
    _finish(_job(["jobs/embed.py", "--date", DATE, "--model", nights.bad], root, "embed.table_format=parquet"))
    assert _metastore_digests(root) == nights.b
    day = root / "warehouse" / "default.db" / users / f"dt={DATE}"
    assert len(list(day.iterdir())) == 1  # the killed runs' folders are gone
    fault_matrix("killed while publishing (Parquet)", runs=len(points), rows_checked=compared)


@pytest.mark.slow
def test_a_delta_publish_killed_at_each_point_then_a_bad_night_rolled_back(
    spark, planted, planted_model, nights, tmp_path, fault_matrix
):
    """Delta (the default): kill the bad night's publish before staging, after it, just before the
    commit and just after it. After each, every table is the previous night or the new one,
    compared by content with clean runs of both. Then the next run publishes the new night whole;
    and on the clean runs' root ``jobs/rollback.py`` gives all three tables back."""
    users = TABLES[0]
    assert all(nights.a[t] != nights.b[t] for t in TABLES)  # really another night
    root = copy_planted(planted, planted_model, tmp_path / "kill")
    _finish(_job(["jobs/embed.py", "--date", DATE], root))
    assert _delta_digests(spark, root) == nights.a
    points = [
        (f"{users}_start", ()),
        (f"{users}_staged", ()),
        (f"{users}_commit", ()),
        (f"{users}_committed", (users,)),
    ]
    compared = _kill_points(spark, root, nights, tmp_path, points, "delta")
    _finish(_job(["jobs/embed.py", "--date", DATE, "--model", nights.bad], root))
    assert _delta_digests(spark, root) == nights.b
    assert not list((root / "warehouse" / "default.db" / users / "_staging" / f"dt={DATE}").iterdir())
    assert f"default.{users}: version 2 -> restored version 1" in nights.rollback_out, nights.rollback_out[-2000:]
    assert nights.rolled_back == nights.a  # all three tables, by content
    compared += 2 * sum(n for n, _ in nights.a.values())
    fault_matrix("killed while publishing (Delta)", runs=len(points), rows_checked=compared)


def test_the_model_is_loaded_once_per_python_process(planted_model, monkeypatch):
    import interest.models.export as export
    from interest.serving import inference

    calls: list[str] = []
    real = export.load_model
    monkeypatch.setattr(export, "load_model", lambda path: calls.append(path) or real(path))
    monkeypatch.setattr(inference, "_MODELS", {})
    first = inference._model(str(planted_model))
    for _ in range(5):  # every later Arrow batch in this executor process
        assert inference._model(str(planted_model)) is first
    assert calls == [str(planted_model)]


def test_an_unreachable_namenode_or_unwritable_root_is_one_clear_line(spark, tmp_path, fault_matrix):
    import socket

    from interest import storage
    from interest.errors import RetryableError
    from interest.storage import StorageError

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = f"hdfs://127.0.0.1:{port}/interest"
    storage.configure(port)
    try:
        with pytest.raises(StorageError, match=rf"^{root} is not writable: .*unreachable") as err:
            run_nightly(spark, make_config(tmp_path, f"paths.root={root}"), DATE)
        assert "\n" not in str(err.value)
        assert isinstance(err.value, RetryableError)  # jobs exit 75: a scheduler may retry it
    finally:
        storage.configure(9870)
    with pytest.raises(StorageError, match=r"^/proc/interest-root is not writable") as err:
        run_nightly(spark, make_config(tmp_path, "paths.root=/proc/interest-root"), DATE)
    assert not isinstance(err.value, RetryableError)  # exit 2: it needs a person
    fault_matrix("storage unreachable or not writable", runs=2)
