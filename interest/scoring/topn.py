"""The recommendation and explanation rules, in one place: the n best-scoring real items a user
never interacted with, and the k history items the attention weighted most. The embed job
publishes both; evaluation ranks targets among the same candidates (``interest.scoring.metrics``),
reads the same lists for beyond-accuracy figures, and deletes the same explanation items in the
faithfulness test (``interest.evaluation.faithfulness``).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from interest.schema import FIRST_ITEM


class RowIndex(Protocol):
    """A nearest-neighbour index over a scoring table's real items (row r: item r + FIRST_ITEM)."""

    def search_rows(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries [B, D] -> (scores [B, k], rows [B, k]) best first; row -1 where none is left."""
        ...


def top_n_unseen(
    user: np.ndarray, table: np.ndarray, histories, n: int, block: int = 256, index: RowIndex | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The n best-scoring real items per user that are not in their history, a block of users at
    a time: one matrix product, the seen items' scores set to -inf, and one (two-stage) ``top_k``.
    No per-user Python, and the [users, items] scores never exist for more than ``block`` users
    (80,000 items: 80 MiB).

    With ``index`` (built over ``table[FIRST_ITEM:]``), each block asks it for n + (the most items
    a user of the block has seen) instead, and the seen ones are dropped: at a million items the
    quantised index answers in half the time of the exact product, with 0.99 of its top 10
    (BENCHMARKS.md, "The nearest-neighbour index").

    user [B, D], table [V, D], histories: per user the item indices seen ([B, L] or ragged) ->
    (items [B, n], scores [B, n]) best first; a slot with nothing left to recommend scores -inf.
    """
    hist = [np.asarray(h, dtype=np.int64) for h in histories]
    b, real_items = len(hist), table.shape[0] - FIRST_ITEM
    n = max(min(n, real_items), 0)
    items = np.zeros((b, n), np.int64)
    scores = np.full((b, n), -np.inf, np.float32)
    if not n:
        return items, scores
    if index is not None:
        for start in range(0, b, block):
            part = slice(start, start + block)
            items[part], scores[part] = _index_top_n(user[part], hist[part], n, real_items, index)
        return items, scores
    import tensorflow as tf

    # (user, candidate) pairs of the seen items, in user order; candidates skip pad and unknown
    rows = np.repeat(np.arange(b, dtype=np.int64), [len(h) for h in hist])
    cols = np.concatenate(hist) - FIRST_ITEM if hist else np.zeros(0, np.int64)
    real = (cols >= 0) & (cols < real_items)
    rows, cols = rows[real], cols[real]
    candidates = tf.constant(table[FIRST_ITEM:], tf.float32)  # [V - 2, D]
    for start in range(0, b, block):
        lo, hi = np.searchsorted(rows, [start, start + block])
        seen = np.stack([rows[lo:hi] - start, cols[lo:hi]], axis=1).astype(np.int32)  # [S, 2]
        values, indices = _top_k(tf.constant(user[start : start + block], tf.float32), candidates, seen, n)
        items[start : start + block] = indices.numpy() + FIRST_ITEM  # [block, n], best first
        scores[start : start + block] = values.numpy()
    return items, scores


def _index_top_n(
    user: np.ndarray, hist: list[np.ndarray], n: int, real_items: int, index: RowIndex
) -> tuple[np.ndarray, np.ndarray]:
    """One block through the index: user [B, D] -> (items [B, n], scores [B, n]) best first."""
    b = len(hist)
    width = min(n + max((len(h) for h in hist), default=0), real_items)
    found, rows = index.search_rows(user, width)  # [B, width] each, row -1 where none is left
    cand = rows.astype(np.int64) + FIRST_ITEM  # [B, width] item indices
    # a candidate is seen when (user row, item) is one of the history's pairs
    seen_keys = np.concatenate([i * (real_items + FIRST_ITEM) + h for i, h in enumerate(hist)]) if b else []
    keys = np.arange(b, dtype=np.int64)[:, None] * (real_items + FIRST_ITEM) + cand
    keep = (rows >= 0) & ~np.isin(keys, seen_keys)  # [B, width]
    order = np.argsort(~keep, axis=1, kind="stable")[:, :n]  # the first n kept, in rank order
    taken = np.take_along_axis(keep, order, 1)
    items = np.where(taken, np.take_along_axis(cand, order, 1), 0)
    return items, np.where(taken, np.take_along_axis(found, order, 1), -np.inf).astype(np.float32)


_TOP_K: dict[str, Any] = {}


def _top_k(user, candidates, seen, k: int):
    """The k best unseen candidates per user, as (values, indices) [B, k] best first: one compiled
    graph, traced once per process for every shape (as ``Encoder.infer``: the same kernels
    whatever shape came first). ``seen`` [S, 2] holds (user row, candidate) pairs to leave out."""
    import tensorflow as tf

    if "fn" not in _TOP_K:
        matrix = tf.TensorSpec([None, None], tf.float32)
        pairs = tf.TensorSpec([None, 2], tf.int32)
        _TOP_K["fn"] = tf.function(_grouped_top_k, input_signature=[matrix, matrix, pairs, tf.TensorSpec([], tf.int32)])
    return _TOP_K["fn"](user, candidates, tf.constant(seen, tf.int32), tf.constant(k, tf.int32))


TOP_K_GROUP = 128  # items per group in the two-stage top-k


def _grouped_top_k(user, candidates, seen, k):
    """Exact top-k of ``user @ candidatesᵀ`` (``seen`` pairs at -inf) in two stages, because one
    ``top_k`` over every item costs more than the matrix product itself (80,000 items).

    Every item of the true top k scores at least the k-th best score, and so does the maximum of
    its group of ``TOP_K_GROUP`` items; at most k groups can have such a maximum. So the top k
    lies within the k groups with the best maxima: one cheap max per group, a ``top_k`` over the
    group maxima, and one over the k · TOP_K_GROUP scores of the chosen groups.
    user [B, D], candidates [N, D], seen [S, 2] -> values [B, k], indices [B, k] into candidates.
    """
    import tensorflow as tf

    scores = tf.matmul(user, candidates, transpose_b=True)  # [B, N]
    scores = tf.tensor_scatter_nd_update(scores, seen, tf.fill(tf.shape(seen)[:1], -float("inf")))
    b, n = tf.shape(scores)[0], tf.shape(scores)[1]
    scores = tf.pad(scores, [[0, 0], [0, (-n) % TOP_K_GROUP]], constant_values=-float("inf"))
    groups = tf.reshape(scores, [b, -1, TOP_K_GROUP])  # [B, G, g]
    best_groups = tf.math.top_k(tf.reduce_max(groups, -1), tf.minimum(k, tf.shape(groups)[1])).indices  # [B, k']
    best_groups = tf.sort(best_groups, axis=-1)  # in item order, so ties go to the lower index, as in one top_k
    chosen = tf.reshape(tf.gather(groups, best_groups, batch_dims=1), [b, -1])  # [B, k' * g]
    top = tf.math.top_k(chosen, k)  # positions within the chosen groups
    item = tf.gather(best_groups, top.indices // TOP_K_GROUP, batch_dims=1) * TOP_K_GROUP + top.indices % TOP_K_GROUP
    return top.values, item  # [B, k] each


def top_weighted_batch(items: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """History positions -> each user's k items with the largest summed attention weight, for a
    whole batch at once (no per-user Python). An item seen twice gets both positions' weight; the
    unknown item and padding are never named.

    items, weights [B, L] -> (item_idx, summed weight (float64), offsets [B + 1]): the
    users' top k in order, heaviest first, ties to the lower item index; user b's are
    ``[offsets[b]:offsets[b + 1]]``.
    """
    b = len(items)
    real = items >= FIRST_ITEM  # [B, L]: real items only (never padding, never the unknown item)
    width = int(items.max(initial=0)) + 1
    keys = (np.arange(b, dtype=np.int64)[:, None] * width + items)[real]  # (user, item), row-major
    unique, inverse = np.unique(keys, return_inverse=True)
    totals = np.bincount(inverse, weights=weights[real].astype(np.float64), minlength=len(unique))
    user, item = unique // width, unique % width
    order = np.lexsort((item, -totals, user))  # per user: heaviest first, then the lower index
    user, item, totals = user[order], item[order], totals[order]
    rank = np.arange(len(user)) - np.searchsorted(user, user)  # position within the user's items
    top = rank < k
    offsets = np.concatenate([[0], np.cumsum(np.bincount(user[top], minlength=b))])
    return item[top], totals[top], offsets
