"""Multi-interest retrieval: which interests retrieve and how their lists merge, in NumPy (the
embed stage, request time) and in the exported graph, which must give the same answers."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from interest.models import savedmodel
from interest.scoring.interests import kept_interests, merge_interests

ITEMS = np.array([[[5, 6, 7], [6, 8, 9]]])  # [B=1, K=2, N=3]
SCORES = np.array([[[0.9, 0.5, 0.4], [0.7, 0.6, 0.1]]], np.float32)
CATEGORIES = np.array([0, 0, 0, 0, 0, 1, 1, 2, 1, 2])  # item index -> category code


def test_the_plain_merge_pools_dedups_and_names_the_best_interest():
    items, scores, slot = merge_interests(ITEMS, SCORES, np.array([[True, True]]), 4)
    assert items.tolist() == [[5, 6, 8, 7]]  # item 6 once, at its better score (interest 1's)
    np.testing.assert_allclose(scores, [[0.9, 0.7, 0.6, 0.4]])
    assert slot.tolist() == [[0, 1, 1, 0]]


def test_diversity_demotes_items_of_categories_already_picked():
    items, scores, _ = merge_interests(ITEMS, SCORES, np.array([[True, True]]), 4, CATEGORIES, 0.5)
    assert items.tolist() == [[5, 7, 6, 8]]  # 7 (category 2) before 6 and 8 (category 1, as 5)
    np.testing.assert_allclose(scores, [[0.9, 0.4, 0.7, 0.6]])  # the retrieving interest's own score


def test_an_interest_left_out_retrieves_nothing():
    items, scores, slot = merge_interests(ITEMS, SCORES, np.array([[True, False]]), 4)
    assert items[np.isfinite(scores)].tolist() == [5, 6, 7] and set(slot[np.isfinite(scores)]) == {0}


def test_copies_light_slots_and_short_histories_do_not_retrieve():
    u = np.array([[[1, 0], [1, 0], [0, 1]]], np.float32)  # slot 1 copies slot 0
    w = np.array([[0.5, 0.3, 0.2]], np.float32)
    assert kept_interests(u, w, np.array([[0, 5, 6, 7]]), 0.02, 0.95).tolist() == [[True, False, True]]
    assert kept_interests(u, w, np.array([[0, 0, 5, 5]]), 0.02, 0.95).tolist() == [[True, False, False]]  # 1 item
    assert kept_interests(u, w, np.array([[0, 5, 6, 7]]), 0.25, 0.95).tolist() == [[True, False, False]]  # light


def test_the_graph_merges_and_keeps_as_numpy_does_with_ties():
    rng = np.random.default_rng(1)
    b, k, n, v = 5, 3, 6, 30
    for _ in range(20):
        items = np.stack(
            [np.stack([rng.choice(np.arange(2, v), n, replace=False) for _ in range(k)]) for _ in range(b)]
        )
        scores = -np.sort(-np.round(rng.normal(size=(b, k, n)), 1).astype(np.float32), axis=2)  # ties on purpose
        scores[rng.random((b, k, n)) < 0.1] = -np.inf
        keep = rng.random((b, k)) < 0.7
        keep[:, 0] = True
        cats = rng.integers(0, 4, v)
        for lam in (0.0, 0.3):
            want = merge_interests(items, scores, keep, n, cats, lam)
            got = savedmodel.merge_interests(
                tf.constant(items, tf.int32),
                tf.constant(scores),
                tf.constant(keep),
                n,
                tf.constant(cats, tf.int32),
                4,
                lam,
            )
            got = [x.numpy() for x in got]
            found = np.isfinite(want[1])
            assert (np.isfinite(got[1]) == found).all()
            assert (got[0][found] == want[0][found]).all() and (got[2][found] == want[2][found]).all()
            np.testing.assert_allclose(got[1][found], want[1][found])
        u = rng.normal(size=(b, k, 4)).astype(np.float32)
        u[:, 1] = u[:, 0]
        u /= np.linalg.norm(u, axis=-1, keepdims=True)
        w = rng.dirichlet(np.ones(k), b).astype(np.float32)
        window = rng.integers(0, 6, (b, 7)).astype(np.int32)
        want_keep = kept_interests(u, w, window, 0.1, 0.95)
        got_keep = savedmodel.kept_interests(tf.constant(u), tf.constant(w), tf.constant(window), 0.1, 0.95).numpy()
        assert (got_keep == want_keep).all()
