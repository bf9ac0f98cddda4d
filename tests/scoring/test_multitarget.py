"""The multi-target protocol's rules: the 80/20 cut, which targets count, and each metric on
lists whose answer is worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from interest.scoring.multitarget import category_diversity, split_point, split_targets, target_metrics


@pytest.mark.parametrize(("n", "cut"), [(1, 1), (2, 1), (5, 4), (10, 8), (11, 8), (20, 16), (737, 589)])
def test_the_cut_keeps_at_least_one_input_and_one_target(n, cut):
    assert split_point(n) == cut


def test_targets_already_in_the_input_and_repeats_are_dropped_but_unknown_ones_stay():
    targets = split_targets([[5, 6, 5, -1, 7, -1], [3]], [[6, 9], [3, 4]])
    assert [t.tolist() for t in targets] == [[5, -1, 7, -1], []]


def test_recall_hit_and_ndcg_on_a_planted_list():
    lists = np.array([[5, 9, 6, 8], [7, 8, 9, 10]])
    targets = [np.array([6, 5, -1]), np.array([4])]  # user 0: one unknown target (a miss)
    m = target_metrics(lists, targets, (1, 4))
    np.testing.assert_allclose(m["recall@1"], [1 / 3, 0.0])
    np.testing.assert_allclose(m["recall@4"], [2 / 3, 0.0])
    np.testing.assert_allclose(m["hr@1"], [1.0, 0.0])
    np.testing.assert_allclose(m["hr@4"], [1.0, 0.0])
    dcg = 1.0 + 1.0 / np.log2(4)  # hits at ranks 1 and 3
    ideal = 1.0 + 1.0 / np.log2(3) + 1.0 / np.log2(4)  # three targets could fill ranks 1-3
    np.testing.assert_allclose(m["ndcg@4"], [dcg / ideal, 0.0])
    np.testing.assert_allclose(m["ndcg@1"], [1.0, 0.0])


def test_a_user_without_targets_is_left_out_not_scored_zero():
    m = target_metrics(np.array([[5, 6]]), [np.array([], np.int64)], (2,))
    assert np.isnan(m["recall@2"][0]) and np.isnan(m["ndcg@2"][0])


def test_diversity_is_the_share_of_pairs_in_different_categories():
    codes = np.array([-1, -1, 0, 0, 1, 2, -1])  # items 2..5 categorised, 6 not
    lists = np.array([[2, 3, 4, 5], [2, 3, 6, 6], [4, 6, 0, 1]])
    d = category_diversity(lists, codes, 4)
    # user 0: categories 0 0 1 2 -> 5 of 6 pairs differ; user 1: 0 0 -> none; user 2: one categorised
    np.testing.assert_allclose(d[:2], [5 / 6, 0.0])
    assert np.isnan(d[2])
