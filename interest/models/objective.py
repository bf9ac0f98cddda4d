"""Next-item prediction, the one objective all encoders share.

At every position with a target, the user state predicts the next item by a softmax over item
scores (dot products with the shared item table). ``full_softmax`` scores every item;
``sampled_softmax`` scores the true item against in-batch targets and uniform negatives and
subtracts log Q (each candidate's expected sampling rate) so the estimate is not biased toward
popular items (mixed negative sampling, Yang et al., 2020). Pad (0) and unknown (1) are never
targets and never candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from interest.config import TrainConfig
from interest.schema import FIRST_ITEM, UNKNOWN

# CL4SRec's augmentations (Xie et al., ICDE 2022) at the rates its successors' code uses on Amazon
# data (CoSeRec, ICLRec): crop keeps 20 % of a history, mask hides 70 % of its steps, reorder
# shuffles a stretch of 20 %
CROP_KEEP, MASK_SHARE, REORDER_SHARE = 0.2, 0.7, 0.2


def gather_targets(sequence: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Positions with a real target: sequence [B, L, D], targets [B, L] -> (h [N, D], y [N])."""
    valid = targets >= FIRST_ITEM
    return tf.boolean_mask(sequence, valid), tf.boolean_mask(targets, valid)


@tf.custom_gradient
def softmax_cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, object]:
    """logits [N, C] (float32), labels [N] -> -log softmax(logits)[label] [N].

    The same values and gradient as ``tf.nn.sparse_softmax_cross_entropy_with_logits``, whose CPU
    kernel is several times slower than a softmax over a catalogue-wide [N, V] (BENCHMARKS, "Full
    against sampled softmax"): one softmax here, whose output the gradient reuses. The log of the
    normaliser comes from the largest probability, which is at least 1/C and so never underflows.
    """
    p = tf.nn.softmax(logits)  # [N, C]
    at = tf.stack([tf.range(tf.shape(labels)[0]), labels], 1)  # [N, 2]
    log_z = tf.reduce_max(logits, -1) - tf.math.log(tf.reduce_max(p, -1))  # [N] log Σ exp(logits)
    loss = log_z - tf.gather_nd(logits, at)  # [N]

    def grad(upstream: tf.Tensor) -> tuple[tf.Tensor, None]:
        return tf.tensor_scatter_nd_sub(p * upstream[:, None], at, upstream), None  # [N, C]

    return loss, grad


def full_softmax_loss(h: tf.Tensor, y: tf.Tensor, table: tf.Tensor, exclude: tf.Tensor | None = None) -> tf.Tensor:
    """h [N, D], y [N], table [V, D] -> per-position cross-entropy [N].

    Pad and unknown are left out by slicing the table (no [N, V] mask to build and differentiate).
    ``exclude`` [N, V] (bool): items that are no candidates at that position (the user's own
    history, see :func:`seen_items`); the target itself always stays one.
    """
    logits = tf.matmul(h, table[FIRST_ITEM:], transpose_b=True)  # [N, V - FIRST_ITEM]
    y = y - FIRST_ITEM
    if exclude is not None:
        items = tf.range(tf.shape(logits)[1])[None]  # [1, V - FIRST_ITEM]
        masked = exclude[:, FIRST_ITEM:] & tf.not_equal(items, y[:, None])  # [N, V - FIRST_ITEM]
        logits = tf.where(masked, tf.cast(-1e9, logits.dtype), logits)
    return softmax_cross_entropy(logits, y)


def seen_items(inputs: tf.Tensor, targets: tf.Tensor, vocab_size: int) -> tf.Tensor:
    """[B, V] bool: the items of each training row (its inputs and targets, so never a held-out
    step). inputs, targets: [B, L] item indices."""
    items = tf.concat([inputs, targets], 1)  # [B, 2L]
    rows = tf.broadcast_to(tf.range(tf.shape(items)[0])[:, None], tf.shape(items))
    pairs = tf.stack([tf.reshape(rows, [-1]), tf.reshape(items, [-1])], 1)  # [B * 2L, 2]
    counts = tf.scatter_nd(pairs, tf.ones([tf.shape(pairs)[0]], tf.int32), [tf.shape(items)[0], vocab_size])
    return counts > 0


def item_log_q(counts: np.ndarray, in_batch: int, uniform: int) -> np.ndarray:
    """log of each item's expected rate among the candidates: in-batch draws follow item
    frequency, uniform draws are flat over real items. counts [V] (0 for pad/unknown) -> [V]."""
    counts = np.asarray(counts, dtype=np.float64)
    n_items = max(len(counts) - FIRST_ITEM, 1)
    p = counts / max(counts.sum(), 1.0)
    q = in_batch * p + uniform / n_items
    q[:FIRST_ITEM] = 1.0
    return np.log(np.maximum(q, 1e-12)).astype(np.float32)


def objective_log_q(counts: np.ndarray, num_negatives: int, in_batch: bool) -> np.ndarray:
    """The log Q a sampled softmax subtracts: in-batch candidates are drawn by frequency only when
    there are any (``in_batch``); uniform ones alone need no correction (a constant)."""
    return item_log_q(counts, num_negatives if in_batch else 0, num_negatives)


def bce_loss(h: tf.Tensor, y: tf.Tensor, table: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """SASRec's loss: -log σ(s⁺) - log(1 - σ(s⁻)) with one uniform negative per position.

    A negative that equals the target is resampled once and masked if it still collides.
    """
    vocab = tf.shape(table)[0]
    neg = tf.random.stateless_uniform(tf.shape(y), seed=seed, minval=FIRST_ITEM, maxval=vocab, dtype=tf.int32)
    again = tf.random.stateless_uniform(tf.shape(y), seed=seed + 1, minval=FIRST_ITEM, maxval=vocab, dtype=tf.int32)
    neg = tf.where(tf.equal(neg, y), again, neg)
    pos_logit = tf.reduce_sum(h * tf.gather(table, y), -1)  # [N]
    neg_logit = tf.reduce_sum(h * tf.gather(table, neg), -1)  # [N]
    valid_neg = tf.cast(tf.not_equal(neg, y), pos_logit.dtype)
    return tf.nn.softplus(-pos_logit) + tf.nn.softplus(neg_logit) * valid_neg


def sampled_softmax_loss(
    h: tf.Tensor,
    y: tf.Tensor,
    table: tf.Tensor,
    log_q: tf.Tensor,
    num_negatives: int,
    seed: tf.Tensor,
    in_batch: bool = True,
    pool: tf.Tensor | None = None,
) -> tf.Tensor:
    """h [N, D], y [N] -> per-position loss [N] against sampled candidates.

    Candidates: up to ``num_negatives`` targets drawn from this batch's real targets (``in_batch``;
    ``pool``: the batch's targets at every position, padding included, for the static-shape form)
    plus ``num_negatives`` uniform items. A candidate equal to the position's own target is masked (no
    accidental hits). With uniform negatives only, the log-Q correction is a constant and changes
    nothing: the loss then matches the sampled-negatives evaluation protocol.
    """
    n = tf.shape(y)[0]
    vocab = tf.shape(table)[0]
    uniform = tf.random.stateless_uniform(
        [num_negatives], seed=seed + 1, minval=FIRST_ITEM, maxval=vocab, dtype=tf.int32
    )
    if in_batch and num_negatives:
        if pool is None:  # a uniform draw behind the targets: a batch without any (short
            # histories batched by length) then still gathers, and its loss is empty
            pool, size = tf.concat([y, uniform[:1]], 0), tf.shape(y)[0]
        else:  # every position of the batch (static shapes): the real targets first, in order
            real = pool >= FIRST_ITEM
            pool = tf.gather(pool, tf.argsort(tf.cast(~real, tf.int32), stable=True))
            size = tf.reduce_sum(tf.cast(real, tf.int32))
        pick = tf.random.stateless_uniform([num_negatives], seed=seed, maxval=tf.maximum(size, 1), dtype=tf.int32)
        cands = tf.concat([tf.gather(pool, pick), uniform], 0)  # [C]
    else:
        cands = uniform
    pos = tf.reduce_sum(h * tf.gather(table, y), -1, keepdims=True)  # [N, 1]
    neg = tf.matmul(h, tf.gather(table, cands), transpose_b=True)  # [N, C]
    pos -= tf.gather(log_q, y)[:, None]
    neg -= tf.gather(log_q, cands)[None]
    clash = tf.equal(y[:, None], cands[None]) | (cands < FIRST_ITEM)[None]  # [N, C]
    neg = tf.where(clash, tf.cast(-1e9, neg.dtype), neg)
    logits = tf.concat([pos, neg], 1)  # [N, 1 + C]
    return softmax_cross_entropy(logits, tf.zeros([n], tf.int32))


def resolve_objective(objective: str, vocab_size: int, sampled_above_items: int) -> str:
    """``auto`` -> full softmax for a catalogue of up to ``sampled_above_items`` real items, sampled
    softmax above it; any other name is kept."""
    if objective != "auto":
        return objective
    return "sampled_softmax" if vocab_size - FIRST_ITEM > sampled_above_items else "full_softmax"


def resolve_batch_by_length(setting: bool | str, objective: str) -> bool:
    """``train.batch_by_length`` for a resolved objective: ``auto`` batches by length only under
    the full softmax, where it is faster at the same quality; under sampled softmax it cost
    quality (in-batch negatives from similar users), and bce was not measured."""
    return objective == "full_softmax" if setting == "auto" else bool(setting)


def next_item_loss(
    sequence: tf.Tensor,
    targets: tf.Tensor,
    table: tf.Tensor,
    objective: str,
    log_q: tf.Tensor | None = None,
    num_negatives: int = 0,
    seed: tf.Tensor | None = None,
    in_batch: bool = True,
    dense: bool = False,
    seen: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """(sum of losses, number of targets) over a batch: sequence [B, L, D], targets [B, L].

    ``dense`` scores every position and zeroes the padded ones instead of gathering the real
    targets first: more arithmetic, but static shapes, which XLA needs to compile a step once.
    ``seen`` [B, V] (full softmax only): items of each row that are no candidates (``seen_items``).
    """
    sequence = tf.cast(sequence, table.dtype)  # mixed precision: logits and loss stay float32
    pool = None
    length = tf.shape(targets)[1]
    if dense:
        pool = tf.reshape(targets, [-1])  # [B*L]
        valid = pool >= FIRST_ITEM
        h, y = tf.reshape(sequence, [-1, tf.shape(sequence)[-1]]), tf.where(valid, pool, FIRST_ITEM)
        row = tf.range(tf.shape(pool)[0]) // length  # [B*L] the batch row of each position
    else:
        h, y = gather_targets(sequence, targets)
        row = tf.cast(tf.where(targets >= FIRST_ITEM)[:, 0], tf.int32)  # [N]
    if objective == "full_softmax":
        losses = full_softmax_loss(h, y, table, None if seen is None else tf.gather(seen, row))
    elif objective == "sampled_softmax":
        if log_q is None or seed is None:
            raise ValueError("sampled_softmax needs log_q and a seed")
        losses = sampled_softmax_loss(h, y, table, log_q, num_negatives, seed, in_batch, pool)
    elif objective == "bce":
        if seed is None:
            raise ValueError("bce needs a seed")
        losses = bce_loss(h, y, table, seed)
    else:
        raise ValueError(f"unknown objective {objective!r}")
    if dense:
        weight = tf.cast(valid, losses.dtype)  # [B*L]
        return tf.reduce_sum(losses * weight), tf.reduce_sum(tf.cast(weight, tf.float32))
    return tf.reduce_sum(losses), tf.cast(tf.size(y), tf.float32)


def routed_interests(interests: tf.Tensor, targets: tf.Tensor, table: tf.Tensor) -> tf.Tensor:
    """At each position, the interest nearest the target (MIND and ComiRec's label-aware pick; the
    pick carries no gradient): interests [B, L, K, D], targets [B, L], table [V, D] -> [B, L, D]."""
    target = tf.gather(table, tf.maximum(targets, 0))  # [B, L, D]
    score = tf.einsum("blkd,bld->blk", tf.cast(interests, table.dtype), target)  # [B, L, K]
    pick = tf.argmax(tf.stop_gradient(score), axis=-1, output_type=tf.int32)  # [B, L]
    return tf.gather(interests, pick, batch_dims=2)  # [B, L, D]


@dataclass(frozen=True)
class NextItemTask:
    """The run's loss, built once from the training section and the data (as TensorFlow
    Recommenders builds a task): each step then hands it only what changes, the batch and a seed."""

    objective: str  # resolved: full_softmax, sampled_softmax or bce
    vocab_size: int
    log_q: tf.Tensor  # [V] sampled softmax's correction
    num_negatives: int = 0
    in_batch: bool = True
    dense: bool = False  # static shapes (XLA)
    exclude_seen: bool = False
    contrastive: float = 0.0  # weight of the contrastive term (contrastive_loss); 0: none
    temperature: float = 1.0
    views: str = "dropout"  # the contrastive term's two views: dropout (DuoRec) or augment (CL4SRec)

    @classmethod
    def for_run(cls, t: TrainConfig, item_counts: np.ndarray, vocab_size: int) -> NextItemTask:
        """item_counts [V]: training occurrences of each item (they set sampled softmax's log Q)."""
        return cls(
            objective=resolve_objective(t.objective, vocab_size, t.sampled_above_items),
            vocab_size=vocab_size,
            log_q=tf.constant(objective_log_q(item_counts, t.num_negatives, in_batch=True)),
            num_negatives=t.num_negatives,
            in_batch=True,
            dense=t.jit_compile,
            exclude_seen=t.exclude_seen,
            contrastive=t.contrastive_weight,
            temperature=t.contrastive_temperature,
            views=t.contrastive_views,
        )

    def __call__(
        self, sequence: tf.Tensor, inputs: tf.Tensor, targets: tf.Tensor, table: tf.Tensor, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """(sum of losses, number of targets): sequence [B, L, D], inputs and targets [B, L] item
        indices, table [V, D], seed [2]."""
        seen = seen_items(inputs, targets, self.vocab_size) if self.exclude_seen else None
        return next_item_loss(
            sequence,
            targets,
            table,
            self.objective,
            self.log_q,
            self.num_negatives,
            seed,
            self.in_batch,
            dense=self.dense,
            seen=seen,
        )


def contrastive_loss(first: tf.Tensor, second: tf.Tensor, last_targets: tf.Tensor, temperature: float) -> tf.Tensor:
    """DuoRec's contrastive regularisation (Qiu et al., WSDM 2022), dropout views: the mean InfoNCE
    of each user vector against its own other view, among all 2B views of the batch.

    first, second [B, D]: the same histories through the encoder twice (different dropout);
    last_targets [B]: each row's last training target. Rows that share it are no negatives of
    each other (DuoRec's false-negative removal: their next items say they are alike). Why: the
    cross-entropy alone lets near-identical histories map to distant vectors; the term asks a
    history's representation to survive dropout while staying apart from other users'."""
    views = tf.concat([first, second], 0)  # [2B, D]
    b = tf.shape(first)[0]
    logits = tf.matmul(views, views, transpose_b=True) / temperature  # [2B, 2B]
    target = tf.concat([last_targets, last_targets], 0)  # [2B]
    own = tf.concat([tf.range(b, 2 * b), tf.range(b)], 0)  # [2B] the other view of the same row
    same = tf.equal(target[:, None], target[None, :])  # [2B, 2B]
    positive = tf.one_hot(own, 2 * b, on_value=True, off_value=False)
    excluded = tf.logical_and(same, tf.logical_not(positive))  # itself, and rows with the same target
    logits = tf.where(excluded, tf.constant(-1e9, logits.dtype), logits)
    losses = softmax_cross_entropy(logits, own)  # [2B]
    return tf.reduce_mean(losses)


def augmented_view(inputs: dict[str, tf.Tensor], seed: tf.Tensor) -> dict[str, tf.Tensor]:
    """One of CL4SRec's three augmentations per history, drawn at random: a view for the
    contrastive term that keeps the history's gist but not its exact steps.

    inputs {feature: [B, L]}, left-padded (the real steps end at the last position); seed [2].
    - crop: a random contiguous ``CROP_KEEP`` of the steps (at least one), moved to the end;
    - mask: each step's item becomes the unknown item with probability ``MASK_SHARE`` (its other
      features stay);
    - reorder: a random stretch of ``REORDER_SHARE`` of the steps, shuffled in place.
    -> the view, the same features and shapes, still left-padded."""
    items = inputs["item_idx"]  # [B, L]
    b, length = tf.shape(items)[0], tf.shape(items)[1]
    keys = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5)  # [5, 2]
    kind = tf.random.stateless_uniform(
        [b], keys[0], minval=0, maxval=3, dtype=tf.int32
    )  # [B] 0 crop, 1 mask, 2 reorder
    real = items > 0  # [B, L]
    n = tf.reduce_sum(tf.cast(real, tf.int32), 1)  # [B] real steps
    first = length - n  # [B] where they start
    pos = tf.range(length)[None, :]  # [1, L]

    def stretch(share: float, key: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """A random stretch of ``share`` of each history: (start position [B], size [B])."""
        size = tf.minimum(tf.maximum(tf.cast(share * tf.cast(n, tf.float32), tf.int32), 1), tf.maximum(n, 1))
        room = tf.cast(tf.maximum(n - size + 1, 1), tf.float32)
        offset = tf.cast(tf.random.stateless_uniform([b], key) * room, tf.int32)  # [B] in [0, n - size]
        return first + tf.minimum(offset, tf.maximum(n - size, 0)), size

    start, size = stretch(CROP_KEEP, keys[1])
    crop_src = start[:, None] + pos - (length - size)[:, None]  # [B, L]: the kept steps end at the last position
    crop_keep = pos >= (length - size)[:, None]
    start, size = stretch(REORDER_SHARE, keys[2])
    inside = (pos >= start[:, None]) & (pos < (start + size)[:, None])  # [B, L]
    order = tf.where(
        inside,
        tf.cast(start[:, None], tf.float32)
        + tf.random.stateless_uniform([b, length], keys[3]) * tf.cast(size[:, None], tf.float32),
        tf.cast(pos, tf.float32),
    )  # [B, L] sort keys: the stretch's shuffled among themselves, the rest in place
    reorder_src = tf.argsort(order, axis=1, stable=True)
    src = tf.where(
        (kind == 0)[:, None],
        crop_src,
        tf.where((kind == 2)[:, None], reorder_src, tf.broadcast_to(pos, tf.shape(items))),
    )
    keep = tf.where((kind == 0)[:, None], crop_keep, real) & (n > 0)[:, None]  # [B, L]
    src = tf.clip_by_value(src, 0, length - 1)
    out = {f: tf.where(keep, tf.gather(v, src, batch_dims=1), tf.zeros_like(v)) for f, v in inputs.items()}
    hidden = (kind == 1)[:, None] & real & (tf.random.stateless_uniform([b, length], keys[4]) < MASK_SHARE)
    out["item_idx"] = tf.where(hidden, tf.constant(UNKNOWN, items.dtype), out["item_idx"])
    return out
