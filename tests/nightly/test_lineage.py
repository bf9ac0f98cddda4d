"""Lineage and warm start: models follow data dates, a night builds on the one before, and
backfills and re-runs give the same tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from embed_runs import (
    PREV,
    cfg_for,
    table_rows,
)

from interest.layout import index_dir
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
from interest.nightly import run_nightly
from interest.serving.index import ItemIndex
from interest.serving.publish import Table

from conftest import DATE


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
    np.testing.assert_allclose(table[10], trained[[2, 3, 6, 7]].mean(axis=0), rtol=1e-6, atol=1e-8)  # category a
    np.testing.assert_allclose(table[11], trained[[4, 5, 8, 9]].mean(axis=0), rtol=1e-6, atol=1e-8)  # category b
    np.testing.assert_allclose(table[12], trained[2:10].mean(axis=0), rtol=1e-6, atol=1e-8)  # no category: the prior
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


def _check_published(spark, cfg, planted: Path, night) -> None:
    """One night's tables as a downstream reader needs them: a row per user, unit vectors, one
    model version, and explanations that name items the user really has in their history."""
    rows = table_rows(spark, cfg, DATE)
    assert "trained" in night.model.action
    assert len(rows) == night.embed.rows == night.sessionize.users
    assert np.allclose([np.linalg.norm(v) for v in rows.embedding], 1.0, atol=1e-5)
    assert rows.user_id.is_unique and rows.model_version.nunique() == 1
    assert all(len(t) <= cfg.embed.top_items for t in rows.top_items)
    seqs = pd.read_parquet(f"{planted}/backfill/sequences/dt={DATE}/infer")
    vocab = pd.read_parquet(f"{planted}/backfill/vocab/dt={DATE}").set_index("item_idx").item_id
    history = {u: set(vocab.reindex(h).dropna()) for u, h in zip(seqs.user_id, seqs.history_idx)}
    assert all({t["item_id"] for t in tops} <= history[u] for u, tops in zip(rows.user_id, rows.top_items))
    # the night's index: the model version of the tables, every item, and (exact at this size)
    # the recommendations table again: each user's nearest items once their history is left out
    index = ItemIndex.load(index_dir(night.model.path, DATE))
    assert (index.meta.model_version, index.meta.date, index.meta.kind) == (rows.model_version[0], DATE, "exact")
    assert night.embed.index == index_dir(night.model.path, DATE)
    assert index.meta.items == night.sessionize.vocab_size - 2
    recs = table_rows(spark, cfg, DATE, cfg.embed.recommendations_table).set_index("user_id")
    sample = rows.head(25)
    seen = max(len(history[u]) for u in sample.user_id)
    found, scores = index.search(np.stack(sample.embedding), cfg.embed.top_n_recommendations + seen)
    for user, got, score in zip(sample.user_id, found, scores):
        new = [(i, s) for i, s in zip(got, score) if i not in history[user]][: cfg.embed.top_n_recommendations]
        want = [(r["item_id"], r["score"]) for r in recs.recommendations[user]]
        assert [i for i, _ in new] == [i for i, _ in want], user
        np.testing.assert_allclose([s for _, s in new], [s for _, s in want], rtol=1e-5, atol=1e-5)
    report_md = Path(night.report_files["markdown"]).read_text()
    assert f"Nightly refresh {DATE}" in report_md and "Gates:" in report_md
    assert len(table_rows(spark, cfg, DATE, cfg.embed.item_table)) == night.sessionize.vocab_size - 2


@pytest.mark.slow
def test_backfill_in_order_then_rerun_out_of_order_gives_the_same_tables(spark, planted, log_lines):
    """Three nights in date order, then the last and the first run again, out of order: the same
    tables exactly, the same models (a re-run reuses the date's model), and one commit per run."""
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
    # each date has the index of its own items, from the model of that date's tables
    for date, path in before["versions"]:
        published = before["tables"][cfg.embed.item_table].query("dt == @date").model_version.unique()
        assert [ItemIndex.load(index_dir(path, date)).meta.model_version] == list(published), date
    # each date built on the model of the date before it
    trained = [load_model(p).config["init_from"] for _, p in before["versions"]]
    assert trained == [None, before["versions"][0][1], before["versions"][1][1]]
    lines.clear()
    assert run_backfill(spark, cfg, dates[0], dates[-1]) == []  # resumes: all done
    assert all("already done, skipped" in ln for ln in lines)
    for date in (DATE, dates[0]):  # an operator clears and re-runs dates out of order
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
    ops = [h["operation"] for h in Table(spark, cfg.embed.database, cfg.embed.table).history()]
    assert ops == ["WRITE"] * 5 + ["CREATE TABLE"]
