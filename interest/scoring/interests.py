"""Multi-interest retrieval: each of a user's interests asks for its own top-N, and the lists are
merged (ComiRec, KDD 2020). The embed stage and request time run these NumPy rules; the exported
graph runs the same rules in TensorFlow (``interest.models.savedmodel``), and a test holds the two
to the same answers.

1. Which interests retrieve (:func:`kept_interests`): a slot the user vector barely reads, or one
   nearly equal to an interest kept before it, adds nothing but copies; nor can a user with 3
   distinct items hold more than 3 interests.
2. The merge (:func:`merge_interests`): the lists are pooled; an item found by several interests
   keeps its best score and names that interest; the pool is ordered by score, then item index.
   With a diversity factor λ > 0 the picks are greedy: a candidate's score drops by λ for each
   item of its category picked before it, which trades accuracy for category diversity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from interest.models.retrieval import Retrieval, category_codes
from interest.schema import FIRST_ITEM
from interest.scoring.topn import RowIndex, top_n_unseen


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Unit vectors along ``axis`` (float32); a zero vector stays zero."""
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def distinct_items(window: np.ndarray) -> np.ndarray:
    """[B, L] item indices -> [B] the number of distinct real items in each row."""
    real = np.where(window >= FIRST_ITEM, window, -1)
    ordered = np.sort(real, axis=1)
    first = np.ones_like(ordered, bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    return ((ordered >= FIRST_ITEM) & first).sum(1)


def kept_interests(
    interests: np.ndarray, weight: np.ndarray, window: np.ndarray, min_weight: float, max_cosine: float
) -> np.ndarray:
    """The interests that retrieve, [B, K] bool.

    Interests are taken by read weight, heaviest first (ties: the lower slot). One is kept when it
    is the first, or draws at least ``min_weight``, and is under ``max_cosine`` to every interest
    kept before it, while fewer are kept than the row has distinct items.
    interests [B, K, D] (L2-normalised), weight [B, K], window [B, L] item indices."""
    b, k = weight.shape
    rows = np.arange(b)
    order = np.argsort(-weight, axis=1, kind="stable")  # [B, K]
    room = np.maximum(distinct_items(window), 1)  # [B]
    keep = np.zeros((b, k), bool)
    count = np.zeros(b, np.int64)
    for rank in range(k):
        slot = order[:, rank]  # [B]
        cosine = np.einsum("bd,bjd->bj", interests[rows, slot], interests)  # [B, K]
        copy = (keep & (cosine >= max_cosine)).any(axis=1)
        ok = ((weight[rows, slot] >= min_weight) | (rank == 0)) & ~copy & (count < room)
        keep[rows, slot] = ok
        count += ok
    return keep


def merge_interests(
    items: np.ndarray,
    scores: np.ndarray,
    keep: np.ndarray,
    n: int,
    categories: np.ndarray | None = None,
    diversity: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-interest top lists -> the user's merged top ``n``.

    items, scores [B, K, N] (each interest's list; -inf where it has none), keep [B, K],
    categories [V] int codes of item indices (None: no diversity term) ->
    (items [B, n], scores [B, n] (the retrieving interest's score; -inf: nothing left),
    interest [B, n] (the slot that retrieved the item)), in pick order."""
    b, k, width = items.shape
    score = np.where(keep[:, :, None], scores, -np.inf).reshape(b, k * width)  # [B, C]
    item = items.reshape(b, k * width).astype(np.int64)
    slot = np.broadcast_to(np.repeat(np.arange(k), width)[None], (b, k * width))
    # one entry per item: its best score, ties to the lower slot
    order = np.lexsort((slot, -score, item))  # [B, C] per row: by item, best first
    item, score, slot = (np.take_along_axis(a, order, 1) for a in (item, score, slot))
    repeat = np.zeros_like(score, bool)
    repeat[:, 1:] = item[:, 1:] == item[:, :-1]
    score = np.where(repeat, -np.inf, score)
    order = np.lexsort((item, -score))  # by score, then the lower item index
    item, score, slot = (np.take_along_axis(a, order, 1) for a in (item, score, slot))
    score = score.astype(np.float32)
    n = min(n, k * width)
    if diversity <= 0 or categories is None:
        return item[:, :n], score[:, :n].astype(np.float32), slot[:, :n]
    rows = np.arange(b)
    code = categories[item]  # [B, C]
    picked = np.zeros((b, int(categories.max(initial=0)) + 1), np.float32)  # [B, categories]
    left = np.isfinite(score)
    out = np.zeros((b, n), np.int64)
    found = np.zeros((b, n), bool)
    for t in range(n):
        # float32 throughout, as the exported graph computes it
        adjusted = np.where(left, score - np.float32(diversity) * picked[rows[:, None], code], -np.inf)
        out[:, t] = pick = np.argmax(adjusted, axis=1)  # ties: the earlier, the better score
        found[:, t] = got = left[rows, pick]
        left[rows, pick] = False
        np.add.at(picked, (rows[got], code[rows, pick][got]), 1.0)
    chosen_score = np.where(found, np.take_along_axis(score, out, 1), -np.inf)
    return np.take_along_axis(item, out, 1), chosen_score.astype(np.float32), np.take_along_axis(slot, out, 1)


def retrieve(
    user: np.ndarray,
    interests: np.ndarray,
    weight: np.ndarray,
    window: np.ndarray,
    histories: Sequence[np.ndarray],
    table: np.ndarray,
    n: int,
    rules: Retrieval,
    categories: np.ndarray | None = None,
    index: RowIndex | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """A batch of users' top ``n`` unseen items, the way the embed stage publishes them.

    With ``rules.multi_interest`` and K > 1 interests, each kept interest asks for its own top n
    and the lists merge (with ``rules.diversity`` by ``categories``); otherwise the user vector
    alone retrieves. user [B, D] and interests [B, K, D] (L2-normalised), weight [B, K], window
    [B, L] item indices, histories: per user the items never to recommend, table [V, D] ->
    (items [B, n], scores [B, n] (-inf: nothing left), interest [B, n], whether interests retrieved).
    """
    b = len(user)
    multi = rules.multi_interest and interests.shape[1] > 1
    if multi:
        queries, keep = interests, kept_interests(interests, weight, window, rules.min_weight, rules.max_cosine)
    else:
        queries, keep = user[:, None], np.ones((b, 1), bool)  # [B, 1, D], [B, 1]
    k = queries.shape[1]
    each, each_scores = top_n_unseen(  # [B * K, n] each
        queries.reshape(b * k, -1), table, [h for h in histories for _ in range(k)], n, index=index
    )
    codes = category_codes(categories) if rules.diversity > 0 else None
    items, scores, slot = merge_interests(
        each.reshape(b, k, -1), each_scores.reshape(b, k, -1), keep, n, codes, rules.diversity
    )
    return items, scores, slot, multi
