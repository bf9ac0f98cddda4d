"""The encoder contract: shapes, attention that sums to 1 and never touches padding or the future,
padding invariance, and learning (each encoder overfits a tiny dataset)."""

from __future__ import annotations

import json
import typing

import keras
import numpy as np
import pytest
import tensorflow as tf

from interest.data.reader import split_view
from interest.models.encoders import ENCODERS, build_encoder, fresh_steps, register
from interest.models.objective import next_item_loss
from interest.schema import ENCODER_NAMES

KINDS = sorted(ENCODERS)
ARGS = dict(
    vocab_size=40, dim=16, heads=2, blocks=2, ff_mult=2, dropout=0.0, memory_slots=3, n_event_types=4, n_gap_buckets=6
)
# the contract also holds for self-attention with BSARec's causal filter beside attention
VARIANTS = [*KINDS, "self_attention+filter"]


def build(kind: str, **args):
    """``build_encoder`` for an encoder name or a variant (``self_attention+filter``: filter_mix 0.5)."""
    if kind == "self_attention+filter":
        return build_encoder("self_attention", **{**args, "filter_mix": 0.5})
    return build_encoder(kind, **args)


def test_the_registry_holds_exactly_the_encoder_names_of_the_schema():
    """Config, jobs and reports take the names from ``schema`` (no TensorFlow needed to know them)."""
    from interest.config import ModelConfig, load_config

    assert tuple(ENCODERS) == ENCODER_NAMES
    assert typing.get_args(typing.get_type_hints(ModelConfig)["encoder"]) == ENCODER_NAMES
    with pytest.raises(ValueError, match="not in interest.schema.ENCODER_NAMES"):
        register("lstm")
    assert load_config(None, ["model.encoder=memory"]).model.encoder == "memory"


def batch(max_len=12, seed=0, lengths=(12, 7, 3, 1)):
    """Left-padded histories with sessions of 3 steps; features 0 on padding."""
    rng = np.random.default_rng(seed)
    b = len(lengths)
    items = np.zeros((b, max_len), "int32")
    sessions = np.zeros((b, max_len), "int32")
    for i, n in enumerate(lengths):
        items[i, max_len - n :] = rng.integers(2, 40, n)
        sessions[i, max_len - n :] = 1 + np.arange(n) // 3
    real = (items > 0).astype("int32")
    return {
        "item_idx": items,
        "event_type_idx": real * rng.integers(1, 5, items.shape).astype("int32"),
        "time_gap_bucket": real * rng.integers(1, 7, items.shape).astype("int32"),
        "session_idx": sessions,
    }


@pytest.mark.parametrize("kind", VARIANTS)
def test_contract_shapes_and_attention(kind):
    enc = build(kind, max_len=12, **ARGS)
    inp = batch()
    out = {k: np.asarray(v) for k, v in enc(inp, training=False).items()}
    k = ARGS["memory_slots"] if kind == "memory" else 1
    assert out["sequence"].shape == (4, 12, 16) and out["user"].shape == (4, 16)
    assert out["interests"].shape == (4, k, 16) and out["attention"].shape == (4, 12)
    np.testing.assert_allclose(out["attention"].sum(1), 1.0, atol=1e-5)
    assert (out["attention"][inp["item_idx"] == 0] == 0).all()
    assert (out["attention"] >= 0).all()
    np.testing.assert_allclose(out["user"], out["sequence"][:, -1], atol=0)
    assert (out["sequence"][inp["item_idx"] == 0] == 0).all()
    # the matrix explains every position: rows of real steps sum to 1, never look ahead or at padding
    m = np.asarray(enc(inp, training=False, return_matrix=True)["attention_matrix"])  # [B, L, L]
    np.testing.assert_allclose(m[:, -1], out["attention"], atol=1e-5)
    real = inp["item_idx"] > 0
    np.testing.assert_allclose(m.sum(-1)[real], 1.0, atol=1e-5)
    assert np.abs(np.triu(np.ones((12, 12)), 1) * m).max() == 0
    assert (m[np.broadcast_to(~real[:, None, :], m.shape)] == 0).all()


def test_self_attention_explains_by_rollout_through_the_residual_blocks():
    """The explanation is attention rollout: per block 0.5 · (heads' mean attention) + 0.5 · I,
    multiplied from the last block down, read at the last position; recomputed here in NumPy
    from each block's own weights."""
    from interest.models.layers import causal_mask, padding_mask

    enc = build_encoder("self_attention", max_len=12, **{**ARGS, "blocks": 3})
    inp = batch()
    items = tf.constant(inp["item_idx"])
    keep = padding_mask(items)
    mask = tf.logical_and(causal_mask(12)[None], keep[:, None, :])
    x = enc.embed({k: tf.constant(v) for k, v in inp.items()}, training=False)
    rollout = np.broadcast_to(np.eye(12), (4, 12, 12))
    for block in enc.blocks_:
        x, weights = block(x, mask, keep, training=False)
        rollout = (0.5 * np.asarray(weights).mean(1) + 0.5 * np.eye(12)) @ rollout  # later blocks on the left
    rollout = rollout * (inp["item_idx"] > 0)[..., None]
    out = enc(inp, training=False)
    np.testing.assert_allclose(np.asarray(out["attention"]), rollout[:, -1], atol=1e-6)
    np.testing.assert_allclose(enc.infer(inp)["attention"], rollout[:, -1], atol=1e-5)
    assert (rollout[:, -1, -1] >= 0.5**3).all()  # the latest step keeps its residual share, block after block


@pytest.mark.parametrize("kind", VARIANTS)
def test_future_steps_never_change_earlier_positions(kind):
    enc = build(kind, max_len=12, **ARGS)
    inp = batch(lengths=(12, 12, 9, 6))
    before = np.asarray(enc(inp, training=False)["sequence"])
    for t in (3, 7, 10):
        changed = {k: v.copy() for k, v in inp.items()}
        changed["item_idx"][:, t + 1 :] = np.where(
            changed["item_idx"][:, t + 1 :] > 0, (changed["item_idx"][:, t + 1 :] + 5) % 38 + 2, 0
        )
        future = changed["item_idx"][:, t + 1 :] > 0
        changed["event_type_idx"][:, t + 1 :] = np.where(future, 4, 0)
        changed["time_gap_bucket"][:, t + 1 :] = np.where(future, 5, 0)
        # the hardest case for the session-level encoder: future steps join step t's session
        # (or, where they already are in it, start a new one)
        same = changed["session_idx"][:, t : t + 1]
        if (np.where(future, same, 0) == inp["session_idx"][:, t + 1 :]).all():
            same = same + 1
        changed["session_idx"][:, t + 1 :] = np.where(future, same, 0)
        assert all((changed[f][:, t + 1 :] != inp[f][:, t + 1 :]).any() for f in changed)
        after = np.asarray(enc(changed, training=False)["sequence"])
        np.testing.assert_allclose(after[:, : t + 1], before[:, : t + 1], atol=1e-5)
        assert np.abs(after[:, t + 1 :] - before[:, t + 1 :]).max() > 1e-4  # the future did change


@pytest.mark.parametrize("kind", VARIANTS)
def test_left_padding_and_no_padding_give_the_same_user(kind):
    long_ = build(kind, max_len=12, **ARGS)
    short = build(kind, max_len=5, **ARGS)
    weights = []
    for w_long, w_short in zip(long_.get_weights(), short.get_weights()):
        weights.append(w_long[: w_short.shape[0]] if w_long.shape != w_short.shape else w_long)
    short.set_weights(weights)
    full = batch(max_len=12, lengths=(5, 5, 5, 5), seed=3)
    trimmed = {k: v[:, -5:] for k, v in full.items()}
    np.testing.assert_allclose(np.asarray(long_(full)["user"]), np.asarray(short(trimmed)["user"]), atol=1e-5)
    # whatever sits in the other feature columns at padded positions does not matter
    noisy = {k: v.copy() for k, v in full.items()}
    for key in ("event_type_idx", "time_gap_bucket", "session_idx"):
        noisy[key][:, :7] = 3
    np.testing.assert_allclose(np.asarray(long_(noisy)["user"]), np.asarray(long_(full)["user"]), atol=1e-5)


@pytest.mark.parametrize("kind", VARIANTS)
def test_each_encoder_overfits_a_tiny_dataset(kind):
    keras.utils.set_random_seed(0)
    # 6 users, each cycling through their own 4 items: the next item is always determined.
    rows = {k: np.zeros((6, 15), "int32") for k in ("item_idx", "event_type_idx", "time_gap_bucket", "session_idx")}
    for u in range(6):
        rows["item_idx"][u] = [2 + 4 * u + (t % 4) for t in range(15)]
        rows["event_type_idx"][u] = 1
        rows["time_gap_bucket"][u] = 2
        rows["session_idx"][u] = 1 + np.arange(15) // 5
    enc = build(kind, max_len=15, **{**ARGS, "vocab_size": 26})
    opt = keras.optimizers.Adam(5e-3)
    inputs, targets = split_view({k: tf.constant(v) for k, v in rows.items()}, "train")

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            s, n = next_item_loss(enc(inputs, training=True)["sequence"], targets, enc.item_table, "full_softmax")
            loss = s / n
        grads = tape.gradient(loss, enc.trainable_variables)
        opt.apply_gradients(zip(grads, enc.trainable_variables))
        return loss

    losses = [float(step()) for _ in range(300)]
    assert losses[-1] < 0.05 * losses[0], (losses[0], losses[-1])
    # every training position now predicts its next item
    seq = np.asarray(enc(inputs, training=False)["sequence"])
    y = np.asarray(targets)
    predicted = (seq @ np.asarray(enc.item_table).T)[..., 2:].argmax(-1) + 2
    assert (predicted[y > 1] == y[y > 1]).mean() == 1.0


@pytest.mark.parametrize("kind", VARIANTS)
def test_mixed_bfloat16_keeps_the_contract_and_float32_outputs(kind):
    """Training may compute in bfloat16; the weights, the outputs the loss and the ranking see, and
    the process's global dtype policy stay float32, and the attention still sums to 1 on real steps."""
    enc = build(kind, precision="mixed_bfloat16", max_len=12, **ARGS)
    assert keras.config.dtype_policy().name == "float32"
    assert {v.dtype for v in enc.trainable_variables} == {"float32"}
    inp = batch()
    out = enc.infer(inp)  # the compiled inference path
    assert {v.dtype for v in out.values()} == {np.dtype("float32")}
    np.testing.assert_allclose(out["attention"].sum(1), 1.0, atol=2e-2)
    assert (out["attention"][inp["item_idx"] == 0] == 0).all()
    # the same weights in a float32 encoder (what an export reloads) give nearly the same user
    f32 = build(kind, max_len=12, **ARGS)
    f32.set_weights(enc.get_weights())
    np.testing.assert_allclose(f32.infer(inp)["user"], out["user"], atol=0.1)
    np.testing.assert_allclose(f32.infer(inp)["user"], np.asarray(f32(inp, training=False)["user"]), atol=1e-5)


@pytest.mark.parametrize("kind", VARIANTS)
def test_compiled_inference_matches_the_full_call_and_reproduces_whatever_came_first(kind):
    """``infer`` computes only the last position (``last_only``) in one graph for every batch size.
    Its user, interests and attention are the full eager call's; and the same rows give the same
    bits whether the process first saw a batch of 3 rows or of 7 (a re-run's batches may arrive in
    another order, and the published tables must not change)."""
    enc = build(kind, max_len=12, **ARGS)
    inp = batch(lengths=(12, 7, 3, 1, 5, 9, 2))
    full = {k: np.asarray(v) for k, v in enc(inp, training=False).items()}
    out = enc.infer(inp)
    assert set(out) == {"user", "interests", "attention", "interest_attention", "interest_weight"}
    for name in out:
        np.testing.assert_allclose(out[name], full[name], atol=1e-5, err_msg=name)
    np.testing.assert_allclose(out["attention"].sum(1), 1.0, atol=1e-5)
    assert (out["attention"][inp["item_idx"] == 0] == 0).all()

    first_small = build(kind, max_len=12, **ARGS)
    first_small.set_weights(enc.get_weights())
    first_small.infer({k: v[:3] for k, v in inp.items()})
    again = first_small.infer(inp)
    for name in out:
        np.testing.assert_array_equal(again[name], out[name], err_msg=name)


def test_memory_interests_are_item_space_vectors_and_score_by_the_best_one():
    """Each memory slot goes through the output head: read alone, a slot gives the user vector
    the model would have drawn from it. Multi-interest scoring takes each item's best slot."""
    from interest.scoring.tasks import InterestsScorer

    enc = build_encoder("memory", max_len=12, **ARGS)
    inp = batch()
    out = enc(inp, training=False)
    slots = np.asarray(out["interests"])  # [B, K, D]
    assert slots.shape == (4, ARGS["memory_slots"], 16)
    table = np.asarray(enc.item_table)
    scores = InterestsScorer("memory", enc).scores(inp)
    np.testing.assert_allclose(scores, np.einsum("bkd,vd->bkv", slots, table).max(1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", VARIANTS)
def test_a_batch_cut_to_its_longest_history_trains_exactly_as_the_padded_one(kind):
    """``trim_padding`` drops the padding every row shares: same loss, same gradients, for every
    encoder (positions count back from the latest step; padding is masked everywhere)."""
    from interest.data.reader import trim_padding

    enc = build(kind, max_len=12, **ARGS)
    inputs, targets = split_view({k: tf.constant(v) for k, v in batch(lengths=(9, 7, 3, 1)).items()}, "train")
    cut, cut_targets = trim_padding(inputs, targets)
    assert cut["item_idx"].shape == (4, 6) and cut_targets.shape == (4, 6)  # 9 steps, 3 held out
    assert int(tf.reduce_sum(tf.cast(cut["item_idx"] > 0, tf.int32))) == int(
        tf.reduce_sum(tf.cast(inputs["item_idx"] > 0, tf.int32))
    )

    def loss_and_grads(x, y):
        with tf.GradientTape() as tape:
            s, n = next_item_loss(enc(x, training=False)["sequence"], y, enc.item_table, "full_softmax")
        return float(s), float(n), tape.gradient(s, enc.trainable_variables)

    full, trimmed = loss_and_grads(inputs, targets), loss_and_grads(cut, cut_targets)
    assert trimmed[1] == full[1] > 0
    np.testing.assert_allclose(trimmed[0], full[0], rtol=1e-5)
    for a, b in zip(full[2], trimmed[2]):
        np.testing.assert_allclose(np.asarray(tf.convert_to_tensor(b)), np.asarray(tf.convert_to_tensor(a)), atol=1e-5)
    empty, _ = trim_padding({k: tf.zeros_like(v) for k, v in inputs.items()}, targets)
    assert empty["item_idx"].shape == (4, 1)  # never a zero-width batch


def test_routing_picks_the_interest_nearest_each_target_and_trains_only_that_one():
    """MIND and ComiRec's label-aware pick: each target trains the interest that scores it best."""
    from interest.models.objective import routed_interests

    table = tf.constant([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # items 2 and 3
    three = [[2.0, 0.1], [0.1, 2.0], [0.5, 0.5]]  # [K, D]
    interests = tf.Variable([[three, three]])  # [1, 2, 3, 2]: the same interests at both positions
    targets = tf.constant([[3, 2]])
    with tf.GradientTape() as tape:
        routed = routed_interests(interests, targets, table)  # [1, 2, 2]
        total = tf.reduce_sum(routed)
    np.testing.assert_allclose(routed.numpy(), [[[0.1, 2.0], [2.0, 0.1]]])
    grad = tape.gradient(total, interests).numpy()[0]  # [2, 3, 2]
    np.testing.assert_allclose(grad[0], [[0, 0], [1, 1], [0, 0]])  # position 0: interest 1 alone
    np.testing.assert_allclose(grad[1], [[1, 1], [0, 0], [0, 0]])  # position 1: interest 0 alone


def test_memory_with_routing_gives_every_positions_interests_in_training_only():
    enc = build_encoder("memory", max_len=12, **{**ARGS, "interest_routing": True})
    inp = batch()
    out = enc(inp, training=True)
    per_position = np.asarray(out["position_interests"])  # [B, L, K, D]
    assert per_position.shape == (4, 12, ARGS["memory_slots"], 16)
    padded = inp["item_idx"] == 0
    assert np.all(per_position[padded] == 0) and np.abs(per_position[~padded]).sum(-1).min() > 0
    np.testing.assert_allclose(per_position[:, -1], np.asarray(out["interests"]), rtol=1e-5, atol=1e-6)
    assert "position_interests" not in enc(inp, training=False)
    assert "position_interests" not in build_encoder("memory", max_len=12, **ARGS)(inp, training=True)


def test_memory_reads_a_whole_history_window_by_window():
    """One window: the slots and the read are the call's at its last position. An older window of
    padding changes nothing; an older window of real steps writes into the same slots."""
    enc = build_encoder("memory", max_len=12, **ARGS)
    inp = batch()
    want = enc(inp, training=False, last_only=True)
    one = enc.read_windows({k: v[:, None] for k, v in inp.items()}, inp["item_idx"][:, None] > 0)
    for name in ("user", "interests", "interest_weight", "attention", "interest_attention"):
        np.testing.assert_allclose(np.asarray(one[name]), np.asarray(want[name]), rtol=1e-5, atol=1e-5, err_msg=name)
    empty = {k: np.stack([np.zeros_like(v), v], axis=1) for k, v in inp.items()}  # [B, 2, L]
    two = enc.read_windows(empty, empty["item_idx"] > 0)
    np.testing.assert_allclose(np.asarray(two["user"]), np.asarray(want["user"]), rtol=1e-5, atol=1e-5)
    older = {k: np.stack([batch(seed=1)[k], v], axis=1) for k, v in inp.items()}
    fresh = np.asarray(fresh_steps(older["item_idx"]))  # [B, 2, L]
    assert not fresh[:, 0, -3:].any() and (fresh[:, 1] == (inp["item_idx"] > 0)).all()
    more = enc.read_windows(older, fresh)
    assert np.abs(np.asarray(more["interests"]) - np.asarray(want["interests"])).max() > 1e-3
    np.testing.assert_allclose(np.asarray(more["interest_weight"]).sum(-1), 1.0, rtol=1e-5)
    # the explanation spans both windows' steps: sums to 1, never on padding or a repeated step
    attention, behind = np.asarray(more["attention"]), np.asarray(more["interest_attention"])  # [B, 2L], [B, K, 2L]
    np.testing.assert_allclose(attention.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(behind.sum(-1), 1.0, rtol=1e-5)
    stale = ~fresh.reshape(len(fresh), -1)
    assert (attention[stale] == 0).all() and (behind.transpose(0, 2, 1)[stale] == 0).all()
    assert attention[:, :12][~stale[:, :12]].sum() > 0  # the older window is read too
    # inference reads the same windows through one compiled graph
    compiled = enc.infer(older)
    for name in ("user", "interests", "attention", "interest_attention"):
        np.testing.assert_allclose(compiled[name], np.asarray(more[name]), rtol=1e-5, atol=1e-6, err_msg=name)
    with pytest.raises(ValueError, match="latest window only"):
        build_encoder("self_attention", max_len=12, **ARGS).infer(older)


def test_the_causal_filter_convolves_earlier_steps_only_and_says_what_it_drew_on():
    """BSARec's filter, made causal: y[t, d] = Σ_{s<=t} k[t-s, d] x[s, d] over real steps,
    recomputed in NumPy; its mix is the explanation's share: rows sum to 1 over the real steps
    up to t, and are 0 on padding and on the future."""
    from interest.models.layers import CausalFilter

    rng = np.random.default_rng(0)
    layer = CausalFilter(max_len=8, dim=3)
    layer.build((2, 8, 3))
    kernel = rng.normal(size=(8, 3)).astype("float32")
    layer.kernel.assign(kernel)
    x = rng.normal(size=(2, 6, 3)).astype("float32")  # a batch cut to 6 of the 8 positions
    keep = np.ones((2, 6), bool)
    keep[1, :2] = False  # left padding
    y, mix = (np.asarray(v) for v in layer(x, keep))
    expected = np.zeros_like(x)
    for t in range(6):
        for s in range(t + 1):
            expected[:, t] += kernel[t - s] * x[:, s] * keep[:, s, None]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(np.triu(np.ones((6, 6)), 1) * mix).max() == 0
    assert (mix[1][:, :2] == 0).all() and (mix[1][:2] == 0).all()
    np.testing.assert_allclose(mix[0].sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(mix[1, 2:].sum(-1), 1.0, atol=1e-6)
    last, last_mix = (np.asarray(v) for v in layer(x, keep, last_only=True))
    np.testing.assert_allclose(last, y[:, -1:], atol=1e-6)
    np.testing.assert_allclose(last_mix, mix[:, -1:], atol=1e-7)


def test_the_filter_is_trained_and_saved_with_the_encoder(tmp_path):
    """filter_mix reaches every block, the kernel is a weight the loss moves, and a saved encoder
    reloads with it (the export path)."""
    enc = build_encoder("self_attention", max_len=12, **{**ARGS, "filter_mix": 0.3})
    kernels = [v for v in enc.trainable_variables if "kernel" in v.path and "filter" in v.path]
    assert len(kernels) == ARGS["blocks"] and all(tuple(k.shape) == (12, 16) for k in kernels)
    inputs, targets = split_view({k: tf.constant(v) for k, v in batch().items()}, "train")
    with tf.GradientTape() as tape:
        s, n = next_item_loss(enc(inputs, training=True)["sequence"], targets, enc.item_table, "full_softmax")
    grads = tape.gradient(s, kernels)
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    enc.save_weights(tmp_path / "encoder.weights.h5")  # as save_model and load_model do
    again = build_encoder("self_attention", **json.loads(json.dumps(enc.args)))
    again.load_weights(tmp_path / "encoder.weights.h5")
    assert again.args["filter_mix"] == 0.3
    np.testing.assert_allclose(again.infer(batch())["user"], enc.infer(batch())["user"], atol=1e-6)
