"""Attention layers against a NumPy reference of softmax(QKᵀ/√d_k)·V, masks, serialisation."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from interest.models import layers as L


def np_attention(q, k, v, mask):
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    scores = np.where(mask, scores, -np.inf)
    with np.errstate(invalid="ignore"):
        w = np.exp(scores - scores.max(-1, keepdims=True))
        w = w / w.sum(-1, keepdims=True)
    w = np.nan_to_num(w)  # rows with no allowed key
    return w @ v, w


def test_scaled_dot_product_attention_matches_numpy():
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(2, 3, 5, 8)).astype("float32") for _ in range(3))
    mask = rng.random((2, 1, 5, 5)) > 0.3
    mask[0, 0, 2] = False  # a query with no allowed key
    out, w = L.scaled_dot_product_attention(q, k, v, mask)
    ref_out, ref_w = np_attention(q, k, v, np.broadcast_to(mask, (2, 3, 5, 5)))
    np.testing.assert_allclose(np.asarray(w), ref_w, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out), ref_out, atol=1e-5)
    w = np.asarray(w)
    allowed = np.broadcast_to(mask, w.shape)
    assert (w[~allowed] == 0).all()  # exactly zero, not just small
    sums = w.sum(-1)
    np.testing.assert_allclose(sums[allowed.any(-1)], 1.0, atol=1e-6)
    assert (sums[~allowed.any(-1)] == 0).all()


def test_multi_head_attention_matches_numpy_with_its_weights():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 8)).astype("float32")
    mask = np.broadcast_to(np.tril(np.ones((6, 6), bool)), (2, 6, 6))
    mha = L.MultiHeadAttention(8, 2)
    out, w = mha(x, attention_mask=mask)
    wq, bq, wk, bk, wv, bv, wo, bo = (
        np.asarray(t)
        for t in (
            mha.q.kernel,
            mha.q.bias,
            mha.k.kernel,
            mha.k.bias,
            mha.v.kernel,
            mha.v.bias,
            mha.o.kernel,
            mha.o.bias,
        )
    )
    split = lambda t: t.reshape(2, 6, 2, 4).transpose(0, 2, 1, 3)  # noqa: E731
    ref, ref_w = np_attention(split(x @ wq + bq), split(x @ wk + bk), split(x @ wv + bv), mask[:, None])
    ref = ref.transpose(0, 2, 1, 3).reshape(2, 6, 8) @ wo + bo
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(w), ref_w, atol=1e-6)
    assert np.asarray(w)[..., np.triu_indices(6, 1)[0], np.triu_indices(6, 1)[1]].max() == 0  # no future


@pytest.mark.parametrize(
    "make,call",
    [
        (lambda: L.MultiHeadAttention(8, 2, 0.1, name="m"), lambda layer, x, m, k: layer(x, attention_mask=m)[0]),
        (lambda: L.FeedForward(8, 3, 0.1, name="f"), lambda layer, x, m, k: layer(x)),
        (lambda: L.TransformerBlock(8, 2, 2, 0.1, name="t"), lambda layer, x, m, k: layer(x, m, k)[0]),
        (lambda: L.QueryPooling(8, 2, name="p"), lambda layer, x, m, k: layer(x, x, m)[0]),
    ],
)
def test_layers_serialise_and_rebuild_identically(make, call):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    keep = np.ones((2, 5), bool)
    mask = np.broadcast_to(np.tril(np.ones((5, 5), bool)), (2, 5, 5))
    layer = make()
    out = call(layer, x, mask, keep)
    clone = layer.__class__.from_config(layer.get_config())
    call(clone, x, mask, keep)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(call(clone, x, mask, keep)), np.asarray(out), atol=1e-6)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert restored.get_config() == layer.get_config()


def test_sequence_embedding_zeroes_padding_and_counts_positions_from_the_end():
    emb = L.SequenceEmbedding(vocab_size=10, max_len=4, dim=6, n_event_types=2, n_gap_buckets=3)
    items = np.array([[0, 0, 3, 4]], "int32")
    feats = {
        "item_idx": items,
        "event_type_idx": np.array([[2, 1, 1, 2]], "int32"),
        "time_gap_bucket": np.array([[3, 3, 1, 2]], "int32"),
    }
    x = np.asarray(emb(feats))
    assert (x[0, :2] == 0).all() and (np.abs(x[0, 2:]).sum(-1) > 0).all()
    pos = np.asarray(emb.positions.embeddings)
    item = np.asarray(emb.items.embeddings)
    et, gap = np.asarray(emb.event_types.embeddings), np.asarray(emb.gaps.embeddings)
    expected_last = item[4] * np.sqrt(6) + pos[0] + et[2] + gap[2]
    np.testing.assert_allclose(x[0, 3], expected_last, atol=1e-6)
