"""One batch of inference rows -> published rows, on a tiny real encoder: no Spark, no files.

``embed_batch`` is what every executor runs; these checks reach it directly (through the tests' pandas
wrapper ``embed_frame``) instead of through a whole nightly run.
"""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest

from interest.models.encoders import build_encoder
from interest.models.export import LoadedModel
from interest.schema import FIRST_ITEM, UNKNOWN
from interest.serving.inference import EMBED_SCHEMA, Embedder

from conftest import embed_frame

L, V = 5, 8  # max_len; item rows: pad, unknown, items 2..7
ITEM_IDS = np.array(["<pad>", "<unknown>", "a", "b", "c", "d", "e", "f"], dtype=object)
CATEGORIES = np.array(["-", "-", "x", "x", "y", "y", "y", "x"], dtype=object)


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    keras.utils.set_random_seed(3)
    encoder = build_encoder(
        "self_attention", vocab_size=V, max_len=L, dim=8, heads=2, blocks=1, n_event_types=2, n_gap_buckets=3
    )
    return LoadedModel(encoder, pd.DataFrame(), {}, {}, "/models/self_attention/v1")


def frame(items: list[list[int]], n_steps: list[int], histories: list[list[int]] | None = None) -> pd.DataFrame:
    """Inference rows: left-padded windows of ``items`` with plausible side features."""
    rows = []
    for i, window in enumerate(items):
        w = np.asarray(window, dtype=np.int32)
        real = (w > 0).astype(np.int32)
        rows.append(
            {
                "user_id": f"u{i}",
                "item_idx": w,
                "event_type_idx": real,  # one event type on real steps
                "time_gap_bucket": real * 2,
                "session_idx": real,
                "n_events": int(real.sum()),
                "n_steps": n_steps[i],
                "history_idx": np.asarray((histories or items)[i], dtype=np.int64),
            }
        )
    return pd.DataFrame(rows)


def run(model: LoadedModel, pdf: pd.DataFrame, top_n: int = 3, cold: int = 3) -> pd.DataFrame:
    return embed_frame(
        pdf,
        Embedder(
            model=model,
            item_ids=ITEM_IDS,
            categories=CATEGORIES,
            top_k=2,
            top_n=top_n,
            cold_min_steps=cold,
            version="v1",
        ),
    )


def test_columns_unit_vectors_and_cold_start_flags(model):
    out = run(model, frame([[0, 0, 2, 3, 4], [0, 0, 0, 0, 5]], n_steps=[3, 1]))
    assert list(out.columns) == [f.name for f in EMBED_SCHEMA.fields]
    assert out.user_id.tolist() == ["u0", "u1"] and out.model_version.tolist() == ["v1", "v1"]
    for vec in out.embedding:
        assert len(vec) == 8 and np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
    for interests in out.interests:
        assert np.linalg.norm(np.stack(interests), axis=-1) == pytest.approx(1.0, abs=1e-5)
    assert out.is_cold_start.tolist() == [False, True]  # n_steps below cold_min_steps=3
    assert out.n_events.tolist() == [3, 1]


def test_recommendations_are_new_items_ranked_by_score(model):
    pdf = frame([[0, 0, 2, 3, 4]], n_steps=[3])
    out = run(model, pdf, top_n=3)
    recs = [(r["item_id"], r["score"]) for r in out.recommendations[0]]
    assert [item for item, _ in recs] and not {item for item, _ in recs} & {"<pad>", "<unknown>", "a", "b", "c"}
    scores = [s for _, s in recs]
    assert scores == sorted(scores, reverse=True) and len(recs) == 3  # d, e, f are left: all three, in order
    user = np.asarray(out.embedding[0])
    table = np.asarray(model.encoder.item_table)
    expected = sorted(range(5, 8), key=lambda j: -(user @ table[j]))
    assert [item for item, _ in recs] == [ITEM_IDS[j] for j in expected]
    majority = pd.Series([CATEGORIES[j] for j in expected]).mode().iloc[0]
    assert out.top_interest[0] == majority


def test_explanations_name_history_items_only(model):
    out = run(model, frame([[0, 0, 2, 3, 3]], n_steps=[3]))
    explained = [(t["item_id"], t["weight"]) for t in out.top_items[0]]
    assert len(explained) == 2 and {item for item, _ in explained} <= {"a", "b"}
    weights = [w for _, w in explained]
    assert weights == sorted(weights, reverse=True) and 0 < sum(weights) <= 1.0 + 1e-6
    assert not any(item in ("<pad>", None) for item, _ in explained)


def test_items_newer_than_the_model_count_as_the_unknown_item(model):
    newer = run(model, frame([[0, 0, 2, 3, 11]], n_steps=[3], histories=[[2, 3]]))  # 11: not in the model
    unknown = run(model, frame([[0, 0, 2, 3, UNKNOWN]], n_steps=[3], histories=[[2, 3]]))
    np.testing.assert_allclose(newer.embedding[0], unknown.embedding[0], atol=1e-6)
    assert newer.recommendations[0].tolist() == unknown.recommendations[0].tolist()
    assert all(r["item_id"] not in ("<pad>", "<unknown>") for r in newer.recommendations[0])


def test_a_user_who_has_seen_everything_gets_no_recommendation(model):
    everything = list(range(FIRST_ITEM, V))
    out = run(model, frame([[3, 4, 5, 6, 7]], n_steps=[5], histories=[everything]))
    assert len(out.recommendations[0]) == 0 and out.top_interest[0] is None


def test_blocked_top_n_equals_ranking_each_user_alone():
    """One matrix product, one scatter of the histories and one row-wise partition give what
    sorting every user's scores on their own gives: the best unseen real items, best first."""
    from interest.scoring.topn import top_n_unseen

    rng = np.random.default_rng(3)
    user, table = rng.normal(size=(40, 8)), rng.normal(size=(30, 8))
    histories = [rng.integers(0, 30, size=rng.integers(0, 29)) for _ in range(40)]  # ragged, with pads
    histories[0] = np.arange(30)  # has seen everything: nothing to recommend
    items, scores = top_n_unseen(user.copy(), table, histories, 5)
    assert items.shape == scores.shape == (40, 5)
    for u in range(40):
        allowed = [j for j in range(2, 30) if j not in set(histories[u].tolist())]
        expect = sorted(allowed, key=lambda j: -(user[u] @ table[j]))[:5]
        found = np.isfinite(scores[u])
        assert items[u][found].tolist() == expect
        np.testing.assert_allclose(scores[u][found], [user[u] @ table[j] for j in expect], atol=1e-5)
    assert not np.isfinite(scores[0]).any()


def test_two_stage_top_k_equals_one_top_k_over_every_item():
    """The grouped top-k (best groups by their maximum, then the best items inside them) returns
    exactly what one ``top_k`` over all scores does, ties included (the lower index first), for
    item counts that are and are not a multiple of the group, and for k beyond one group."""
    import tensorflow as tf

    from interest.scoring.topn import TOP_K_GROUP, _top_k

    rng = np.random.default_rng(5)
    for n_items, k in ((TOP_K_GROUP * 7, 10), (TOP_K_GROUP * 5 + 37, 150), (50, 50), (TOP_K_GROUP * 3, 3)):
        user = rng.normal(size=(33, 6)).astype(np.float32)
        table = rng.normal(size=(n_items, 6)).astype(np.float32)
        table[n_items // 2 :: 7] = table[3]  # exact ties in every user's scores, across groups
        values, indices = _top_k(tf.constant(user), tf.constant(table), np.zeros((0, 2), np.int32), k)
        expected = tf.math.top_k(tf.matmul(user, table, transpose_b=True), k)
        np.testing.assert_array_equal(indices.numpy(), expected.indices.numpy())
        np.testing.assert_array_equal(values.numpy(), expected.values.numpy())


def test_explanations_of_a_batch_sum_repeats_and_rank_each_user_alone():
    """``top_weighted_batch``: per user, an item's weight is the sum over the positions it holds,
    padding never counts, heaviest first with ties to the lower index, k at most, users apart."""
    from interest.scoring.topn import top_weighted_batch

    items = np.array([[0, 2, 3, 2, 4], [5, 5, 5, 0, 0], [0, 0, 0, 0, 0], [7, 6, 6, 7, 3]])
    weights = np.array(
        [[0.9, 0.2, 0.3, 0.4, 0.1], [0.1, 0.2, 0.3, 0.4, 0.0], [1, 1, 1, 1, 1], [0.25, 0.125, 0.125, 0.25, 0.25]]
    )
    item, weight, offsets = top_weighted_batch(items, weights, 2)
    got = [list(zip(item[a:b].tolist(), np.round(weight[a:b], 6).tolist())) for a, b in zip(offsets, offsets[1:])]
    assert got == [[(2, 0.6), (3, 0.3)], [(5, 0.6)], [], [(7, 0.5), (3, 0.25)]]
    # the unknown item (index 1, an item the vocabulary does not know) is never an explanation,
    # however much weight its positions have
    item, weight, offsets = top_weighted_batch(np.array([[0, 1, 4, 1, 5]]), np.array([[0, 0.3, 0.2, 0.4, 0.1]]), 2)
    assert item.tolist() == [4, 5] and offsets.tolist() == [0, 2]


def test_inference_rows_of_the_wrong_length_are_refused_with_a_clear_error(model):
    """Inference rows are padded to max_len; a row of another length (sequences written for
    another model) stops the batch with the reason rather than a shape error deep in TensorFlow."""
    pdf = frame([[0, 0, 2, 3, 4]], n_steps=[3])
    pdf.at[0, "item_idx"] = np.array([2, 3, 4], dtype=np.int32)
    with pytest.raises(ValueError, match="exactly 5 steps per feature"):
        run(model, pdf)
