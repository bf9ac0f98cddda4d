"""Segments, bootstrap intervals, the evaluation tasks, co-occurrence and beyond-accuracy metrics on
small inline data whose answers are known."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from interest.data.files import load_rows, training_sequences
from interest.scoring import beyond
from interest.scoring import metrics as M
from interest.scoring.cooccurrence import CoOccurrenceScorer, fit_on_validation
from interest.scoring.segments import (
    bootstrap_interval,
    category_sets,
    drift_segment,
    estimate,
    history_segment,
    paired_difference,
    per_user,
)
from interest.scoring.tasks import PopularityScorer, cold_replay, leave_one_out, rank_task, temporal
from interest.scoring.topn import top_n_unseen

from conftest import rows_of


def test_history_length_bins_are_inclusive_and_cover_everything():
    got = history_segment(np.array([0, 1, 5, 6, 20, 21, 50, 51, 200, 201, 737]))
    assert got.tolist() == ["0", "1-5", "1-5", "6-20", "6-20", "21-50", "21-50", "51-200", "51-200", ">200", ">200"]


def test_drift_is_a_target_outside_the_two_top_categories():
    # items 2..7; item 7 has two genres
    cats = category_sets([None, None, "A", "A", "B", "C", "", "C|A"])
    inputs = np.array(
        [
            [2, 3, 4, 5],  # A x2, B, C: top two are A and B (C loses the tie on name)
            [2, 3, 4, 5],
            [0, 0, 6, 6],  # no categorised history
            [0, 2, 4, 4],  # top A, B
            [0, 5, 5, 4],  # top C, B
        ]
    )
    targets = np.array([5, 4, 2, 7, 7])
    assert drift_segment(inputs, targets, cats).tolist() == ["drifting", "steady", "unknown", "steady", "steady"]
    assert drift_segment(inputs[:1], np.array([6]), cats).tolist() == ["unknown"]  # the target has none


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_users():
    rng = np.random.default_rng(0)
    small, large = rng.random(50), rng.random(5000)
    lo, hi = bootstrap_interval(small)
    assert lo < small.mean() < hi
    assert bootstrap_interval(small) == (lo, hi)  # seeded: the same interval every time
    lo2, hi2 = bootstrap_interval(large)
    assert hi2 - lo2 < (hi - lo) / 5
    e = estimate(np.ones(10))
    assert (e["mean"], e["lo"], e["hi"], e["n"]) == (1.0, 1.0, 1.0, 10)


def test_paired_difference_sees_a_small_consistent_gain_that_unpaired_intervals_miss():
    rng = np.random.default_rng(1)
    base = rng.random(300)
    better = base + 0.02  # the same users, each a little better
    diff = paired_difference(better, base)
    assert diff["lo"] > 0 and diff["mean"] == pytest.approx(0.02)
    a, b = estimate(better), estimate(base)
    assert a["lo"] < b["hi"]  # unpaired, the intervals overlap
    noise = paired_difference(rng.permutation(base), base)
    assert noise["lo"] < 0 < noise["hi"]


def test_per_user_means_weigh_each_user_once():
    values = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    users = np.array(["b", "b", "a", "c", "c"])
    assert per_user(values, users).tolist() == [0.5, 0.0, 1.0]  # in order of first appearance


def test_leave_one_out_and_cold_replay_tasks():
    rows = rows_of([[0, 2, 3, 4, 5, 6], [7, 8, 9, 2, 3, 4]], [5, 9], ["a", "b"])
    test = leave_one_out(rows, "test")
    assert test.targets.tolist() == [6, 4]
    assert test.inputs["item_idx"].tolist() == [[0, 0, 2, 3, 4, 5], [0, 7, 8, 9, 2, 3]]
    assert test.history_len.tolist() == [4, 8]
    valid = leave_one_out(rows, "valid")
    assert valid.targets.tolist() == [5, 3] and valid.inputs["item_idx"][0].tolist() == [0, 0, 0, 2, 3, 4]
    # user b's earliest stored window does not reach back to its first step: left out
    earliest = rows_of([[0, 2, 3, 4, 5, 6], [5, 5, 7, 8, 9, 2]], [5, 9], ["a", "b"])
    earliest["complete"] = np.array([True, False])
    cold = cold_replay(test, earliest, 2)
    assert cold.user.tolist() == ["a"] and cold.targets.tolist() == [6]
    assert cold.inputs["item_idx"].tolist() == [[0, 0, 0, 0, 2, 3]]
    assert cold.history_len.tolist() == [2]
    assert len(cold_replay(test, earliest, 5)) == 0  # a has only 4 steps before its target


def test_temporal_targets_are_the_first_new_items_after_the_cut():
    before = rows_of([[0, 0, 2, 3, 4, 2], [0, 0, 0, 5, 6, 7], [0, 0, 0, 0, 8, 9], [0, 0, 0, 2, 3, 4]],
                     [4, 3, 2, 3], ["a", "b", "c", "d"])  # fmt: skip
    after = rows_of(
        [
            [2, 3, 4, 2, 3, 10],  # a: 2 new steps, 3 seen before, 10 new
            [0, 5, 6, 7, 11, 12],  # b: 11 then 12
            [0, 0, 0, 0, 8, 9],  # c: nothing new
            [0, 2, 3, 9, 5, 6],  # d: its steps at the cut changed (4 -> 9): cannot be split
        ],
        [6, 5, 2, 5],
        ["a", "b", "c", "d"],
    )
    first = temporal(before, after)
    assert first.user.tolist() == ["a", "b"] and first.targets.tolist() == [10, 11]
    assert first.inputs["item_idx"].tolist() == before["item_idx"][:2].tolist()
    assert first.history_len.tolist() == [4, 3]
    assert sorted(first.seen[1].tolist()) == [5, 6, 7, 11, 12]  # never candidates, never negatives
    week = temporal(before, after, first_only=False)
    assert week.user.tolist() == ["a", "b", "b"] and week.targets.tolist() == [10, 11, 12]


def test_full_ranking_leaves_out_seen_items_as_the_published_lists_do():
    rng = np.random.default_rng(3)
    users, table = rng.normal(size=(6, 4)), rng.normal(size=(30, 4))
    scores = users @ table.T
    seen = [rng.choice(np.arange(2, 30), size=8, replace=False) for _ in range(6)]
    targets = np.array([int(rng.choice(np.setdiff1d(np.arange(2, 30), h))) for h in seen])
    ranks = M.rank_full(scores, targets, seen)
    lists, _ = top_n_unseen(users.astype(np.float32), table.astype(np.float32), seen, 28)
    for n in range(6):  # the rank is the target's position in the list the embed job would publish
        assert ranks[n] == list(lists[n]).index(targets[n])
    assert (ranks <= M.rank_full(scores, targets)).all()
    # a seen target is still ranked (never left out as "seen")
    assert M.rank_full(scores[:1], np.array([seen[0][0]]), seen[:1])[0] >= 0


def test_counted_targets_are_misses_and_excluded_ones_are_left_out():
    scores = np.tile(np.arange(10.0), (4, 1))  # item 9 best
    targets = np.array([9, 1, 9, 2])
    ranks = M.rank_targets(lambda a, b: scores[a:b], [[]] * 4, targets, 10, negatives=3, seeds=(1,))
    assert ranks.ranked.tolist() == [True, False, True, True]
    excluded, counted = ranks.values(3), ranks.values(3, counted=True)
    assert excluded["full_hr"].tolist() == [1.0, 1.0, 0.0]
    assert counted["full_hr"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert M.summarize(ranks, 3, counted=True)["full_hr@3"] == pytest.approx(0.5)
    assert M.summarize(ranks, 3)["full_hr@3"] == pytest.approx(2 / 3)


def test_cooccurrence_learns_what_follows_what():
    # 3 is always followed by 5, 4 by 6; 7 is everywhere (popular) but never right after 3
    seqs = [np.array([7, 3, 5, 7, 4, 6])] * 20 + [np.array([7, 7, 2, 7])] * 20
    scorer = CoOccurrenceScorer.fit(seqs, 10, span=1, last=1)
    s = scorer.scores({"item_idx": np.array([[0, 0, 3], [0, 0, 4]])})
    assert s[0].argmax() == 5 and s[1].argmax() == 6
    assert np.isneginf(s[:, :2]).all()
    symmetric = CoOccurrenceScorer.fit(seqs, 10, span=1, symmetric=True, last=1)
    assert symmetric.scores({"item_idx": np.array([[0, 0, 5]])})[0].argmax() == 3
    # validation picks the span and history that rank the planted follower first
    rows = rows_of([[0, 7, 3, 5]] * 5, [3] * 5, list("abcde"))

    def validate(sc):
        return M.summarize(rank_task(sc, leave_one_out(rows, "test"), 10, negatives=0), 1)["full_hr@1"]

    best, tried = fit_on_validation(
        seqs, 10, validate, {"span": (1, 3), "last": (1, 2), "decay": (0.5,), "symmetric": (False,)}
    )
    assert len(tried) == 4 and validate(best) == 1.0
    assert validate(PopularityScorer(np.bincount(np.concatenate(seqs), minlength=10))) == 0.0


def test_training_sequences_join_windows_and_drop_held_out_steps(tmp_path):
    # user a: 9 steps 2..10 in windows of 6 (stride 3): window 1 = steps 1-6, window 0 = steps 4-9
    table = pa.table(
        {
            "user_id": ["a", "a", "b"],
            "window": [1, 0, 0],
            "item_idx": [[2, 3, 4, 5, 6, 7], [5, 6, 7, 8, 9, 10], [0, 0, 0, 4, 3, 2]],
            "event_type_idx": [[1] * 6] * 3,
            "time_gap_bucket": [[1] * 6] * 3,
            "session_idx": [[1] * 6] * 3,
            "n_steps": [9, 9, 3],
            "history_idx": [[2, 3, 4, 5, 6, 7, 8, 9, 10]] * 2 + [[2, 3, 4]],
        }
    )
    pq.write_table(table, tmp_path / "part-0.parquet")
    seqs = training_sequences(str(tmp_path))
    assert [s.tolist() for s in seqs] == [[2, 3, 4, 5, 6, 7, 8], [4]]
    latest = load_rows(str(tmp_path))
    assert latest["item_idx"][0].tolist() == [5, 6, 7, 8, 9, 10]
    earliest = load_rows(str(tmp_path), window="earliest")
    assert earliest["item_idx"][0].tolist() == [2, 3, 4, 5, 6, 7] and earliest["complete"].tolist() == [True, True]


def test_beyond_accuracy_metrics_on_known_lists():
    cats = category_sets([None, None, "A", "A", "B", "B|C", None])
    lists = np.array([[2, 3], [2, 4], [5, 6]])
    assert beyond.coverage(lists, 8) == pytest.approx(5 / 6)  # items 2..7: 7 never recommended
    div = beyond.intra_list_diversity(lists, cats)
    assert div[0] == 0.0 and div[1] == 1.0 and np.isnan(div[2])  # item 6 has no category
    assert beyond.intra_list_diversity(np.array([[4, 5]]), cats)[0] == pytest.approx(0.5)
    counts = np.array([0, 0, 8, 4, 2, 1, 1])  # 16 steps
    nov = beyond.novelty(np.array([[2, 2], [5, 6]]), counts)
    assert nov.tolist() == pytest.approx([1.0, 4.0])  # -log2(8/16), -log2(1/16)
    # two slots that split the categories exactly, and one slot holding everything
    items = [np.array([2, 3, 4, 5]), np.array([2, 3, 4, 5])]
    purity = beyond.slot_purity([np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0])], items, cats)
    assert purity.tolist() == [1.0, 0.5]
