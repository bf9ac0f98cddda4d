"""The nearest-neighbour index: exact where it says so, the quantised scan close to it, stored whole or not at all."""

from __future__ import annotations

import json

import numpy as np
import pytest

from interest.layout import index_dir
from interest.serving.index import IndexNotFoundError, ItemIndex, drop_indexes


def _items(n: int, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, d))
    vectors = centres[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, d))  # clustered, like item tables
    return vectors.astype(np.float32), np.array([f"item-{i}" for i in range(n)])


def _brute(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]


def test_the_exact_index_gives_the_brute_force_top_k_with_its_scores():
    vectors, ids = _items(500)
    queries = np.random.default_rng(1).normal(size=(7, 16)).astype(np.float32)
    index = ItemIndex.build(vectors, ids, "v1", "2026-11-26")
    got, scores = index.search(queries, 10)
    want = _brute(vectors, queries, 10)
    assert index.meta.kind == "exact" and index.meta.items == 500 and index.meta.dim == 16
    np.testing.assert_array_equal(got, ids[want])
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ vectors.T, want, axis=1), rtol=1e-5, atol=1e-5)
    few, few_scores = ItemIndex.build(vectors[:3], ids[:3], "v1", "2026-11-26").search(queries[:1], 5)
    assert list(few[0, 3:]) == [None, None] and np.isneginf(few_scores[0, 3:]).all()  # fewer items than k


def test_above_the_threshold_the_quantised_scan_finds_nearly_all_of_the_exact_top_10():
    vectors, ids = _items(5000)
    rng = np.random.default_rng(2)
    queries = np.stack([vectors[rng.choice(5000, 10)].mean(axis=0) for _ in range(200)])  # users: means of items
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    index = ItemIndex.build(vectors, ids, "v1", "2026-11-26", exact_max_items=1000)
    got, _ = index.search(queries, 10)
    want = ids[_brute(vectors, queries, 10)]
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want)])
    assert index.meta.kind == "pq" and recall >= 0.98, recall
    close, _ = index.search(queries, 100)  # a wider k still ranks its candidates exactly
    assert np.mean([len(set(g) & set(w)) / 10 for g, w in zip(close[:, :10], want)]) == recall


def test_saved_and_loaded_it_answers_the_same_and_an_incomplete_folder_is_no_index(tmp_path):
    vectors, ids = _items(300)
    model_dir = str(tmp_path / "models" / "memory" / "2026-11-26-v")
    folder = index_dir(model_dir, "2026-11-26")
    assert folder == str(tmp_path / "models" / "memory" / "_index" / "2026-11-26-v" / "dt=2026-11-26")
    built = ItemIndex.build(vectors, ids, "2026-11-26-v", "2026-11-26")
    built.save(folder)
    loaded = ItemIndex.load(folder)
    queries = vectors[:5]
    for a, b in zip(built.search(queries, 10), loaded.search(queries, 10)):
        np.testing.assert_array_equal(a, b)
    quantised = ItemIndex.build(vectors, ids, "2026-11-26-v", "2026-11-26", exact_max_items=100)
    quantised.save(str(tmp_path / "pq"))
    again = ItemIndex.load(str(tmp_path / "pq"))
    assert again.meta.kind == "pq"
    for a, b in zip(quantised.search(queries, 10), again.search(queries, 10)):
        np.testing.assert_array_equal(a, b)
    assert json.loads((tmp_path / folder / "index.json").read_text())["model_version"] == "2026-11-26-v"
    (tmp_path / folder / "index.json").unlink()  # as a run killed before its last write leaves it
    with pytest.raises(IndexNotFoundError, match="no item index at .*dt=2026-11-26: run the embed stage"):
        ItemIndex.load(folder)
    built.save(folder)
    assert drop_indexes(model_dir, ["2026-11-25", "2026-11-26"]) == [folder]
    with pytest.raises(IndexNotFoundError):
        ItemIndex.load(folder)
    with pytest.raises(ValueError, match="queries of width 3 against an index of width 16"):
        built.search(np.zeros((1, 3)), 5)


def _histories(n_users: int, items: int, seed: int) -> list[np.ndarray]:
    """Per user 0 to 60 seen item indices (of a table whose real items start at FIRST_ITEM)."""
    from interest.schema import FIRST_ITEM

    rng = np.random.default_rng(seed)
    return [rng.choice(items, rng.integers(0, 61), replace=False) + FIRST_ITEM for _ in range(n_users)]


def test_the_top_n_through_the_exact_index_is_the_exact_top_n_and_never_a_seen_item():
    import pickle

    from interest.schema import FIRST_ITEM
    from interest.scoring.topn import top_n_unseen

    vectors, ids = _items(800)
    table = np.concatenate([np.zeros((FIRST_ITEM, 16), np.float32), vectors])  # [V, D] pad and unknown first
    users = np.random.default_rng(3).normal(size=(300, 16)).astype(np.float32)
    hist = _histories(300, 800, seed=4)
    hist[0] = np.arange(FIRST_ITEM, FIRST_ITEM + 795)  # five items left: five slots of -inf
    want_items, want_scores = top_n_unseen(users, table, hist, 10, block=64)
    index = pickle.loads(pickle.dumps(ItemIndex.build(vectors, ids, "v1", "2026-11-26")))  # as broadcast
    got_items, got_scores = top_n_unseen(users, table, hist, 10, block=64, index=index)
    np.testing.assert_array_equal(np.isfinite(got_scores), np.isfinite(want_scores))
    found = np.isfinite(want_scores)  # a slot of -inf has no item (the exact path leaves any there)
    np.testing.assert_array_equal(got_items[found], want_items[found])
    np.testing.assert_allclose(got_scores[found], want_scores[found], rtol=1e-5, atol=1e-5)
    assert np.isneginf(got_scores[0, 5:]).all() and np.isfinite(got_scores[0, :5]).all()
    for items, scores, seen in zip(got_items, got_scores, hist):
        assert not set(items[np.isfinite(scores)]) & set(seen.tolist())


def test_the_top_n_through_the_quantised_index_finds_nearly_all_of_the_exact_one():
    from interest.schema import FIRST_ITEM
    from interest.scoring.topn import top_n_unseen

    vectors, ids = _items(5000)
    table = np.concatenate([np.zeros((FIRST_ITEM, 16), np.float32), vectors])
    rng = np.random.default_rng(5)
    users = np.stack([vectors[rng.choice(5000, 10)].mean(axis=0) for _ in range(200)])
    users = (users / np.linalg.norm(users, axis=1, keepdims=True)).astype(np.float32)
    hist = _histories(200, 5000, seed=6)
    want, _ = top_n_unseen(users, table, hist, 10)
    index = ItemIndex.build(vectors, ids, "v1", "2026-11-26", exact_max_items=1000)
    got, scores = top_n_unseen(users, table, hist, 10, index=index)
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want)])
    assert index.meta.kind == "pq" and recall >= 0.97, recall
    assert np.isfinite(scores).all()
    assert all(not set(g) & set(h.tolist()) for g, h in zip(got, hist))
    np.testing.assert_allclose(scores, np.take_along_axis(users @ table.T, got, 1), rtol=1e-4, atol=1e-5)
