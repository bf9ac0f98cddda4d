"""The evaluation protocol where it used to distort a published figure: cold-start replays, a user
with few unseen items, the explanation the deletion test removes, and a later date's vocabulary."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from interest.config import Config
from interest.evaluation.breakdown import build_breakdown
from interest.evaluation.evaluate import EvalData, add_temporal, headline
from interest.evaluation.faithfulness import explained_positions, random_positions, recent_positions
from interest.layout import Layout
from interest.scoring import metrics as M
from interest.scoring.tasks import PopularityScorer, cold_replay, leave_one_out, rank_task
from interest.scoring.topn import top_weighted_batch

from conftest import rows_of


def test_a_cold_start_replay_has_seen_only_its_prefix():
    # a: first steps 2, 3; later 4, 5 (the most popular items); target 6
    rows = rows_of([[0, 2, 3, 4, 5, 6]], [5], ["a"])
    earliest = {**rows, "complete": np.array([True])}
    test = leave_one_out(rows, "test")
    cold = cold_replay(test, earliest, 2)
    assert sorted(cold.seen[0].tolist()) == [2, 3]
    pop = PopularityScorer(np.array([0, 0, 1, 1, 9, 8, 5, 0]))  # items 2..7
    # with the whole history seen, 6 is the best unseen item; a user who saw only 2 and 3 has 4, 5 above it
    assert rank_task(pop, test, 8, negatives=0).full.tolist() == [0]
    assert rank_task(pop, cold, 8, negatives=0).full.tolist() == [2]


def test_one_user_with_few_unseen_items_keeps_the_sampled_protocol_for_the_others():
    # 12 items (2..11); user 0 saw 8 of the 9 items besides its target: 1 unseen, fewer than 5 negatives
    hist = [np.arange(2, 10), np.array([2, 3]), np.array([4, 5])]
    targets = np.array([11, 9, 8])
    scores = np.tile(np.arange(12.0), (3, 1))  # the higher the index, the better
    ranks = M.rank_targets(lambda a, b: scores[a:b], hist, targets, 12, negatives=5, seeds=(1, 2))
    summary = M.summarize(ranks, 3)
    assert "sampled_hr@3" in summary and "1 user(s) with fewer than 5 unseen items" in summary["sampled_note"]
    assert ranks.sampled[:, 0].tolist() == [0, 0]  # ranked among its one unseen item: it scores lower
    negs = M.sample_negatives(hist, targets, 12, 5, seed=1)
    assert sorted(negs[0].tolist()) == [-1, -1, -1, -1, 10]
    # the other users keep 5 distinct unseen negatives each
    assert all(len(set(row.tolist())) == 5 and (row >= 2).all() for row in negs[1:])


def test_a_breakdown_without_sampled_metrics_reports_the_full_ones():
    rows = rows_of([[0, 2, 3, 4, 5, 6], [0, 0, 2, 3, 4, 5]], [5, 4], ["a", "b"])
    tasks = {"test": leave_one_out(rows, "test")}
    pop = PopularityScorer(np.array([0, 0, 1, 2, 3, 4, 5]))
    b = build_breakdown({"popularity": [pop]}, tasks, 7, None, k=3, negatives=50, seeds=(1,))  # catalogue too small
    assert b.metrics == ["full_hr", "full_ndcg"]
    assert set(b.to_dict()) == {"full_hr", "full_ndcg"}


def test_deletion_removes_the_items_the_explanation_names():
    items = np.array([[0, 5, 7, 5, 1, 9]])
    weights = np.array([[0.0, 0.25, 0.3, 0.2, 0.35, 0.1]])  # per step: the unknown item (1), then 7
    for k in (1, 2):
        named, _, _ = top_weighted_batch(items, weights, k)  # what the table publishes
        mask = explained_positions(items, weights, k)
        assert set(items[mask].tolist()) == set(named.tolist())
    assert explained_positions(items, weights, 1).tolist() == [[False, True, False, True, False, False]]
    # the k most recent items, every step of each; never the unknown item
    recent = recent_positions(np.array([[0, 3, 4, 3, 1, 6]]), 2)
    assert recent.tolist() == [[False, True, False, True, False, True]]


def test_random_deletion_draws_items_uniformly_not_steps():
    rng = np.random.default_rng(0)
    items = np.tile(np.array([[3, 3, 3, 4, 1]]), (4000, 1))
    picked = random_positions(items, 1, rng)
    assert (picked.sum(1) >= 1).all() and not picked[:, 4].any()  # one item's steps, never the unknown
    share_of_3 = picked[:, 0].mean()  # 3 holds three steps of four: by steps it would be 0.75
    assert share_of_3 == pytest.approx(0.5, abs=0.04)


@dataclass
class ByIndex:
    """Scores an item by its index: items newer than the cut outrank every older one."""

    size: int
    name: str = "by index"

    def scores(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return np.broadcast_to(np.arange(self.size, dtype=np.float64), (len(inputs["item_idx"]), self.size))


def _write(path: str, rows: dict[str, np.ndarray]) -> None:
    def column(v: np.ndarray) -> list | np.ndarray:
        if v.ndim == 2 or (v.dtype == object and len(v) and isinstance(v[0], np.ndarray)):
            return [list(map(int, x)) for x in v]
        return v

    table = pa.table({k: column(v) for k, v in rows.items()})
    pq.write_table(table, f"{path}/part-0.parquet")


def test_a_later_date_leaves_the_leave_one_out_figures_as_they_are(tmp_path):
    from pathlib import Path

    from interest.config import from_dict

    cfg: Config = from_dict({"paths": {"root": str(tmp_path)}})
    date, later = "2026-11-26", "2026-11-27"
    layout = Layout.of(cfg, date)
    rows = rows_of([[0, 2, 3, 4, 5, 6], [0, 0, 7, 8, 9, 2]], [5, 4], ["a", "b"])  # items 2..9 at T
    after = rows_of([[2, 3, 4, 5, 6, 10], [0, 7, 8, 9, 2, 11]], [6, 5], ["a", "b"])  # 10, 11: new after T
    vocab = pd.DataFrame(
        {"item_idx": range(2, 10), "item_id": [f"i{i}" for i in range(2, 10)], "category": None, "count": 1}
    )
    grown = pd.concat(
        [vocab, pd.DataFrame({"item_idx": [10, 11], "item_id": ["i10", "i11"], "category": None, "count": 1})]
    )
    for path, frame in ((layout.at(later).sessionized.vocab, grown),):
        Path(path).mkdir(parents=True)
        frame.to_parquet(f"{path}/part-0.parquet", index=False)
    for path, data in ((layout.sessionized.infer, rows), (layout.at(later).sessionized.infer, after)):
        Path(path).mkdir(parents=True)
        _write(path, data)
    counts = np.array([0, 0, 5, 4, 3, 2, 1, 1, 1, 1])
    test = leave_one_out(rows, "test")
    data = EvalData(date, rows, vocab, 10, None, counts, "", {"test": test})
    grown_data = add_temporal(layout, data, later)
    assert grown_data.tasks["temporal_first"].targets.tolist() == [10, 11]
    assert grown_data.catalogue == 12 and grown_data.vocab_size == 10
    seeds = (1, 2)
    for scorers in ({"by index": [ByIndex(10)]}, {"popularity": [PopularityScorer(counts)]}):
        grown_scorers = {
            n: [ByIndex(12) if isinstance(s, ByIndex) else PopularityScorer(grown_data.counts) for s in g]
            for n, g in scorers.items()
        }
        before = headline(scorers, {}, data, 3, 4, seeds)
        with_after = headline(grown_scorers, {}, grown_data, 3, 4, seeds)
        assert with_after == before
    # the temporal tasks do rank the newer items: 10 and 11 score highest by index
    ranks = rank_task(ByIndex(12), grown_data.tasks["temporal_first"], grown_data.vocab_size, negatives=0)
    assert ranks.full.tolist() == [1, 0]
