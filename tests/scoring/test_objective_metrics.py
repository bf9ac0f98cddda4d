"""The next-item objective against a NumPy reference, and the ranking metrics on known ranks."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from interest.models import objective as O
from interest.schema import UNKNOWN
from interest.scoring import metrics as M


def test_full_softmax_matches_numpy_and_skips_pad_and_unknown():
    rng = np.random.default_rng(0)
    seq = rng.normal(size=(2, 3, 4)).astype("float32")
    table = rng.normal(size=(7, 4)).astype("float32")
    targets = np.array([[0, 5, 1], [3, 6, 2]], "int32")  # 0 = no target, 1 = unknown: skipped
    total, n = O.next_item_loss(tf.constant(seq), tf.constant(targets), tf.constant(table), "full_softmax")
    keep = targets >= 2
    h, y = seq[keep], targets[keep]
    logits = h @ table[2:].T
    ref = -(logits[np.arange(len(y)), y - 2] - np.log(np.exp(logits).sum(1)))
    assert float(n) == 4
    np.testing.assert_allclose(float(total), ref.sum(), rtol=1e-5)


def test_cross_entropy_has_the_values_and_gradient_of_tensorflows_own():
    """The faster cross-entropy against TensorFlow's fused kernel, with a weighted upstream
    gradient and logits far apart (a target 300 below the best: its probability underflows)."""
    rng = np.random.default_rng(4)
    logits = rng.normal(scale=3.0, size=(6, 9)).astype("float32")
    logits[0, :] = 0.0
    logits[0, 4] = -300.0
    logits[1, 7] = 80.0
    labels = tf.constant([4, 7, 0, 8, 3, 3], tf.int32)
    weight = tf.constant([1.0, 0.5, 2.0, 0.0, 1.0, 3.0])
    x = tf.Variable(logits)
    results = []
    for loss in (O.softmax_cross_entropy, lambda v, y: tf.nn.sparse_softmax_cross_entropy_with_logits(y, v)):
        with tf.GradientTape() as tape:
            values = loss(x, labels)  # [6]
            total = tf.reduce_sum(values * weight)
        results.append((values.numpy(), tape.gradient(total, x).numpy()))
    (ours, our_grad), (theirs, their_grad) = results
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours[0], 300.0 + np.log(8.0), rtol=1e-6)
    np.testing.assert_allclose(our_grad, their_grad, rtol=1e-5, atol=1e-6)
    assert not np.any(our_grad[3])  # a zero weight passes no gradient


def test_sampled_softmax_masks_accidental_hits_and_corrects_for_sampling():
    rng = np.random.default_rng(1)
    h = tf.constant(rng.normal(size=(5, 4)).astype("float32"))
    y = tf.constant([2, 3, 3, 4, 5], tf.int32)
    table = tf.constant(rng.normal(size=(8, 4)).astype("float32"))
    log_q = tf.constant(O.item_log_q(np.array([0, 0, 10, 30, 5, 5, 1, 1]), 4, 4))
    loss = O.sampled_softmax_loss(h, y, table, log_q, 4, tf.constant([1, 2], tf.int64))
    assert loss.shape == (5,) and np.isfinite(loss.numpy()).all() and (loss.numpy() > 0).all()
    # accidental hits: with one position (target 3) and items {2, 3}, every in-batch candidate and
    # every uniform draw of 3 is masked; only the draws of item 2 count as negatives
    small = table[:4]
    seed = tf.constant([5, 6], tf.int64)
    one = O.sampled_softmax_loss(h[:1], y[1:2], small, log_q[:4], 6, seed).numpy()[0]
    draws = tf.random.stateless_uniform([6], seed=seed + 1, minval=2, maxval=4, dtype=tf.int32).numpy()
    k = int((draws == 2).sum())
    s = h[0].numpy() @ small.numpy().T - log_q.numpy()[:4]
    np.testing.assert_allclose(one, np.log1p(k * np.exp(s[2] - s[3])), rtol=1e-5)
    q = np.exp(log_q.numpy())
    assert q[3] > q[2] > q[6]  # frequent items are expected more often among candidates


def test_a_batch_without_targets_has_an_empty_loss_under_every_objective():
    # users with the fewest trainable steps have no training target; batched by length, a whole
    # batch of them reaches the loss
    seq, table = tf.ones([3, 4, 2]), tf.ones([6, 2])
    log_q = tf.constant(O.item_log_q(np.ones(6), 4, 4))
    for objective in ("full_softmax", "sampled_softmax", "bce"):
        total, n = O.next_item_loss(
            seq, tf.zeros([3, 4], tf.int32), table, objective, log_q, 4, tf.constant([1, 2], tf.int64)
        )
        assert (float(total), float(n)) == (0.0, 0.0), objective


def test_unknown_objective_is_rejected():
    with pytest.raises(ValueError, match="unknown objective"):
        O.next_item_loss(tf.zeros([1, 2, 3]), tf.constant([[2, 2]]), tf.zeros([4, 3]), "bpr")


def test_ranks_and_metrics_on_known_values():
    scores = np.array([[0, 0, 5, 4, 3, 2], [0, 0, 1, 1, 1, 9], [0, 0, 3, 3, 3, 3.0]])
    targets = np.array([4, 3, 2])
    ranks = M.rank_full(scores, targets)
    assert ranks.tolist() == [2, 3, 3]  # ties count against the target
    r = M.Ranking.from_ranks(np.array([0, 2, 10, 1]), k=10)
    assert r.hr == pytest.approx(0.75)
    assert r.ndcg == pytest.approx((1 + 1 / np.log2(4) + 1 / np.log2(3)) / 4)
    assert r.mrr == pytest.approx((1 + 1 / 3 + 1 / 11 + 1 / 2) / 4)


def test_sampled_negatives_avoid_history_and_are_seeded():
    hist = np.array([[0, 2, 3, 4], [5, 6, 7, 8]])
    targets = np.array([4, 8])
    a = M.sample_negatives(hist, targets, 30, 10, seed=1)
    b = M.sample_negatives(hist, targets, 30, 10, seed=1)
    c = M.sample_negatives(hist, targets, 30, 10, seed=2)
    assert (a == b).all() and not (a == c).all()
    assert not set(a[0]) & {2, 3, 4} and not set(a[1]) & {5, 6, 7, 8}
    assert a.min() >= 2 and a.max() < 30
    scores = np.tile(np.arange(30.0), (2, 1))
    assert M.rank_sampled(scores, targets, a).tolist() == [(a[0] > 4).sum(), (a[1] > 8).sum()]
    # 7 real items (2..8): the users have 4 and 3 unseen, fewer than 10: all of them, the rest no candidate (-1)
    short = M.sample_negatives(hist, targets, 9, 10, seed=1)
    assert sorted(short[0].tolist()) == [-1] * 6 + [5, 6, 7, 8] and sorted(short[1].tolist()) == [-1] * 7 + [2, 3, 4]


def test_evaluate_scores_perfect_and_popularity_like():
    hist = np.tile(np.array([[0, 0, 2, 3]]), (4, 1))
    targets = np.array([5, 6, 7, 8])
    perfect = M.evaluate_scores(
        lambda a, b: np.eye(12)[targets[a:b]] * 10, hist, targets, 12, k=10, negatives=5, seeds=(1, 2)
    )
    assert perfect["full_hr@10"] == 1.0 and perfect["full_ndcg@10"] == 1.0 and perfect["sampled_hr@10"] == 1.0
    flat = M.evaluate_scores(lambda a, b: np.zeros((b - a, 12)), hist, targets, 12, k=3, negatives=5, seeds=(1,))
    assert flat["full_hr@3"] == 0.0 and flat["sampled_hr@3"] == 0.0
    tiny = M.evaluate_scores(lambda a, b: np.zeros((b - a, 12)), hist, targets, 12, k=3, negatives=50, seeds=(1,))
    assert "sampled_hr@3" not in tiny and "too few unseen items" in tiny["sampled_note"]


def test_sampled_negatives_are_distinct():
    # 100 negatives out of 150 unseen items: drawing with replacement repeats some in every row
    hist = np.tile(np.array([[0, 2, 3]]), (20, 1))
    targets = np.full(20, 4)
    negs = M.sample_negatives(hist, targets, 2 + 153, 100, seed=3)
    assert all(len(set(row.tolist())) == 100 for row in negs)
    assert not np.isin(negs, [2, 3, 4]).any()


def test_unknown_targets_are_excluded_and_counted():
    # Three users; the second's target is the unknown item (1). Its "rank" among real items would
    # be -1 (a hit with NDCG = inf) if it were scored; it must be left out and counted instead.
    scores = np.array([[0, 5, 1, 3, 2, 0.5], [0, 9, 1, 1, 1, 1], [0, 0, 4, 3, 2, 1.0]])
    targets = np.array([3, 1, 5])
    hist = np.zeros((3, 2), dtype=np.int64)
    got = M.evaluate_scores(lambda a, b: scores[a:b], hist, targets, 6, k=2, negatives=2, seeds=(1,))
    expected = M.Ranking.from_ranks(M.rank_full(scores[[0, 2]], targets[[0, 2]]), k=2)
    assert got["excluded_targets"] == 1 and got["users"] == 2
    assert got["full_hr@2"] == pytest.approx(expected.hr) and got["full_ndcg@2"] == pytest.approx(expected.ndcg)
    assert np.isfinite(got["full_ndcg@2"]) and got["full_ndcg@2"] <= 1.0
    with pytest.raises(ValueError, match="real items"):
        M.rank_full(scores, targets)
    with pytest.raises(ValueError, match="nothing to rank"):
        M.evaluate_scores(lambda a, b: scores[a:b], hist[:1], np.array([1]), 6, k=2)


@pytest.mark.parametrize(
    "objective, in_batch", [("full_softmax", False), ("sampled_softmax", False), ("sampled_softmax", True)]
)
def test_dense_loss_equals_the_gathered_one(objective, in_batch):
    """The static-shape form XLA compiles scores every position and weights padding 0: the same
    sum and count as gathering the real targets first, in-batch negatives included (drawn from the
    real targets only, never from padding)."""
    rng = np.random.default_rng(2)
    seq = tf.constant(rng.normal(size=(3, 5, 4)).astype("float32"))
    table = tf.constant(rng.normal(size=(9, 4)).astype("float32"))
    targets = tf.constant([[0, 0, 4, 1, 7], [0, 2, 3, 8, 8], [0, 0, 0, 0, 6]], tf.int32)
    log_q = tf.constant(O.objective_log_q(np.arange(9), 6, in_batch))
    args = (seq, targets, table, objective, log_q, 6, tf.constant([3, 4], tf.int64), in_batch)
    total, n = O.next_item_loss(*args)
    dense_total, dense_n = O.next_item_loss(*args, dense=True)
    assert float(n) == float(dense_n) == 7
    np.testing.assert_allclose(float(dense_total), float(total), rtol=1e-5)


def test_log_q_corrects_only_for_frequency_drawn_candidates():
    counts = np.array([0, 0, 100, 10, 1, 1])
    uniform_only = O.objective_log_q(counts, 8, in_batch=False)
    assert np.allclose(uniform_only[2:], uniform_only[2])  # uniform draws: a constant, no popularity bias
    mixed = O.objective_log_q(counts, 8, in_batch=True)
    assert mixed[2] > mixed[3] > mixed[4]


def test_auto_batches_by_length_only_under_the_full_softmax():
    assert O.resolve_batch_by_length("auto", "full_softmax") is True
    assert O.resolve_batch_by_length("auto", "sampled_softmax") is False
    assert O.resolve_batch_by_length("auto", "bce") is False
    assert O.resolve_batch_by_length(True, "sampled_softmax") is True  # an explicit choice stands
    assert O.resolve_batch_by_length(False, "full_softmax") is False


def test_auto_objective_samples_only_above_the_catalogue_threshold():
    assert O.resolve_objective("auto", 2 + 20_000, 20_000) == "full_softmax"
    assert O.resolve_objective("auto", 2 + 20_001, 20_000) == "sampled_softmax"
    assert O.resolve_objective("bce", 2 + 50_000, 20_000) == "bce"  # a named objective is kept


def test_seen_items_are_no_candidates_in_the_loss_but_the_target_is():
    rng = np.random.default_rng(4)
    seq = tf.constant(rng.normal(size=(2, 4, 3)).astype("float32"))
    table = tf.constant(rng.normal(size=(8, 3)).astype("float32"))
    inputs = tf.constant([[0, 2, 3, 4], [0, 0, 5, 6]], tf.int32)
    targets = tf.constant([[2, 3, 4, 5], [0, 5, 6, 7]], tf.int32)
    seen = O.seen_items(inputs, targets, 8)
    assert seen.numpy().tolist() == [
        [True, False, True, True, True, True, False, False],
        [True, False, False, False, False, True, True, True],
    ]
    total, n = O.next_item_loss(seq, targets, table, "full_softmax", seen=seen)
    expected = 0.0
    for b, t in ((0, 0), (0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)):
        y = int(targets[b, t])
        allowed = [i for i in range(2, 8) if i == y or not seen[b, i]]
        logits = seq.numpy()[b, t] @ table.numpy()[allowed].T
        expected += np.log(np.exp(logits).sum()) - logits[allowed.index(y)]
    assert float(n) == 7
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)
    dense_total, _ = O.next_item_loss(seq, targets, table, "full_softmax", seen=seen, dense=True)
    np.testing.assert_allclose(float(dense_total), expected, rtol=1e-5)
    plain, _ = O.next_item_loss(seq, targets, table, "full_softmax")
    assert float(plain) > float(total)  # more candidates to lose against


def test_the_task_built_from_the_training_section_applies_its_settings():
    """The run's loss object: ``exclude_seen`` takes each row's own items out of the candidates (the
    loss above), ``auto`` resolves by catalogue size, and ``jit_compile`` picks the dense form."""
    from interest.config import load_config

    rng = np.random.default_rng(4)
    seq = tf.constant(rng.normal(size=(2, 4, 3)).astype("float32"))
    table = tf.constant(rng.normal(size=(8, 3)).astype("float32"))
    inputs = tf.constant([[0, 2, 3, 4], [0, 0, 5, 6]], tf.int32)
    targets = tf.constant([[2, 3, 4, 5], [0, 5, 6, 7]], tf.int32)
    seed = tf.constant([1, 2], tf.int64)
    counts = np.arange(8)

    def task(*sets: str) -> O.NextItemTask:
        return O.NextItemTask.for_run(load_config(None, list(sets)).train, counts, 8)

    plain, excluding = task(), task("train.exclude_seen=true")
    assert plain.objective == "full_softmax" and not plain.dense and task("train.jit_compile=true").dense
    assert task("train.sampled_above_items=5").objective == "sampled_softmax"
    seen = O.seen_items(inputs, targets, 8)
    expected = O.next_item_loss(seq, targets, table, "full_softmax", seen=seen)
    got = excluding(seq, inputs, targets, table, seed)
    np.testing.assert_allclose([float(v) for v in got], [float(v) for v in expected], rtol=1e-6)
    assert float(plain(seq, inputs, targets, table, seed)[0]) > float(got[0])  # more candidates, more loss


def test_contrastive_term_is_infonce_over_both_views_without_rows_of_the_same_next_item():
    """DuoRec's term against a NumPy InfoNCE: each of the 2B views against its row's other view;
    itself and the views of rows sharing its last target are no candidates."""
    rng = np.random.default_rng(7)
    first, second = rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(4, 3)).astype("float32")
    last = np.array([5, 6, 5, 9], "int32")  # rows 0 and 2 share their next item
    got = float(O.contrastive_loss(tf.constant(first), tf.constant(second), tf.constant(last), 0.5))
    views, target = np.concatenate([first, second]), np.concatenate([last, last])
    losses = []
    for i in range(8):
        own = (i + 4) % 8
        candidates = [j for j in range(8) if j == own or target[j] != target[i]]
        logits = views[candidates] @ views[i] / 0.5
        losses.append(np.log(np.exp(logits).sum()) - views[own] @ views[i] / 0.5)
    np.testing.assert_allclose(got, np.mean(losses), rtol=1e-5)
    # the term rewards agreement: views that are the same vector lose less than unrelated ones
    assert float(O.contrastive_loss(tf.constant(first), tf.constant(first), tf.constant(last), 0.5)) < got


def test_the_training_loss_adds_the_weighted_contrastive_term_per_target():
    """train.contrastive_weight λ: training_loss = next-item loss + λ · term per target (dropout 0
    here, so both views are the same vector and the term is computed on it)."""
    from interest.config import load_config
    from interest.models.encoders import build_encoder
    from interest.schema import SEQUENCE_FEATURES
    from interest.training.loop import training_loss

    enc = build_encoder("self_attention", vocab_size=12, max_len=6, dim=8, heads=2, blocks=1, dropout=0.0)
    items = np.array([[0, 2, 3, 4, 5, 6], [0, 0, 7, 8, 9, 10], [2, 4, 6, 8, 10, 11]], "int32")
    real = np.where(items[:, :-1] > 0, 1, 0).astype("int32")  # [B, 5]
    inputs = {name: tf.constant(real) for name in SEQUENCE_FEATURES}
    inputs["item_idx"] = tf.constant(items[:, :-1].copy())
    targets = tf.constant(items[:, 1:].copy())
    seed = tf.constant([1, 2], tf.int64)
    counts = np.ones(12)

    def task(*sets: str) -> O.NextItemTask:
        return O.NextItemTask.for_run(load_config(None, list(sets)).train, counts, 12)

    plain, n = training_loss(enc, task(), inputs, targets, seed)
    with_term, n2 = training_loss(
        enc, task("train.contrastive_weight=0.3", "train.contrastive_temperature=2"), inputs, targets, seed
    )
    user = enc(inputs, training=False)["user"]
    term = O.contrastive_loss(user, user, targets[:, -1], 2.0)
    assert float(n) == float(n2) == 14
    np.testing.assert_allclose(float(with_term), float(plain) + 0.3 * float(term) * 14, rtol=1e-5)


def _augmentation_kind(before: np.ndarray, after: np.ndarray, follow: np.ndarray) -> str:
    """Which of CL4SRec's augmentations turned one left-padded row ``before`` into ``after``
    (``follow`` [L]: another feature of the view, which must travel with its step), or raise."""
    real = before[before > 0]
    n = len(real)
    got = after[after > 0]
    if n == 0:
        assert not after.any(), "an empty history stays empty"
        return "empty"
    stretch = max(int(0.2 * n), 1)
    assert (after[: len(after) - len(got)] == 0).all(), "a view stays left-padded"
    if (after == before).all():
        return "unchanged"  # a mask that drew no step, or a shuffle that drew the same order
    if len(got) == stretch and any((real[s : s + stretch] == got).all() for s in range(n - stretch + 1)):
        assert (follow[after > 0] == after[after > 0] + 1000).all(), "the other features move with the steps"
        return "crop"
    if len(got) == n and ((after[-n:] == real) | (after[-n:] == UNKNOWN)).all() and (after[-n:] == UNKNOWN).any():
        assert (follow[-n:] == real + 1000).all(), "a masked step keeps its other features"
        return "mask"
    moved = np.flatnonzero(after[-n:] != real)
    assert len(moved) and moved[-1] - moved[0] < stretch, f"not a crop, mask or reorder: {before} -> {after}"
    assert sorted(after[-n:]) == sorted(real) and (follow[-n:] == after[-n:] + 1000).all()
    return "reorder"


def test_augmented_views_are_crops_masks_or_reorders_of_the_history():
    """CL4SRec's views: each row is a crop of a fifth of its steps (moved to the end), a mask of
    its items to the unknown item, or a shuffled stretch of a fifth; the same seed gives the same
    view, another seed another one; padding never becomes a step."""
    rng = np.random.default_rng(3)
    items = np.zeros((300, 20), "int32")
    for row, n in enumerate(rng.integers(0, 21, len(items))):
        items[row, 20 - n :] = rng.permutation(np.arange(2, 400))[:n]
    inputs = {"item_idx": tf.constant(items), "session_idx": tf.constant(np.where(items > 0, items + 1000, 0))}
    view = O.augmented_view(inputs, tf.constant([4, 2], tf.int64))
    after, follow = view["item_idx"].numpy(), view["session_idx"].numpy()
    kinds = [_augmentation_kind(b, a, f) for b, a, f in zip(items, after, follow)]
    assert {"crop", "mask", "reorder", "empty"} <= set(kinds)
    assert min(kinds.count(k) for k in ("crop", "mask", "reorder")) > 25  # each drawn about a third of the time
    again = O.augmented_view(inputs, tf.constant([4, 2], tf.int64))["item_idx"].numpy()
    other = O.augmented_view(inputs, tf.constant([5, 2], tf.int64))["item_idx"].numpy()
    assert (again == after).all() and (other != after).any()


def test_the_training_loss_contrasts_two_augmented_views_with_augment():
    """train.contrastive_views=augment: the term compares two augmented views (CL4SRec), each from
    its own half of the step's seed; the next-item loss stays on the original history."""
    from interest.config import load_config
    from interest.models.encoders import build_encoder
    from interest.schema import SEQUENCE_FEATURES
    from interest.training.loop import training_loss

    enc = build_encoder("self_attention", vocab_size=40, max_len=10, dim=8, heads=2, blocks=1, dropout=0.0)
    rng = np.random.default_rng(1)
    items = np.where(np.arange(11)[None] >= rng.integers(0, 8, (16, 1)), rng.integers(2, 40, (16, 11)), 0)
    inputs = {name: tf.constant(np.where(items[:, :-1] > 0, 1, 0).astype("int32")) for name in SEQUENCE_FEATURES}
    inputs["item_idx"] = tf.constant(items[:, :-1].astype("int32"))
    targets = tf.constant(items[:, 1:].astype("int32"))
    seed = tf.constant([3, 4], tf.int64)

    def task(*sets: str) -> O.NextItemTask:
        return O.NextItemTask.for_run(load_config(None, list(sets)).train, np.ones(40), 40)

    plain, n = training_loss(enc, task(), inputs, targets, seed)
    weighted = ("train.contrastive_weight=0.5", "train.contrastive_temperature=0.5")
    got, _ = training_loss(enc, task(*weighted, "train.contrastive_views=augment"), inputs, targets, seed)
    dropout_views, _ = training_loss(enc, task(*weighted), inputs, targets, seed)
    keys = tf.random.experimental.stateless_split(seed, 2)
    first, second = (enc(O.augmented_view(inputs, key), training=False)["user"] for key in keys)
    term = O.contrastive_loss(first, second, targets[:, -1], 0.5)
    np.testing.assert_allclose(float(got), float(plain) + 0.5 * float(term) * float(n), rtol=1e-5)
    assert abs(float(got) - float(dropout_views)) > 1e-3  # the views differ from the history itself
