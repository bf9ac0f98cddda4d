"""Starting vectors for items the model has not trained yet (new in the vocabulary since).

A new item gets the mean vector of the trained items in its category, so that users of that
interest find it near what they like from the first day; an item without a known category gets
the popularity prior (the count-weighted mean of all trained vectors). Used when a warm-started
model grows its item table and when ``item_embeddings`` is published with a model that predates
the item. Pure NumPy/pandas: no TensorFlow.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from interest.schema import FIRST_ITEM


def cold_item_rows(trained: np.ndarray, vocab: pd.DataFrame, size: int) -> np.ndarray:
    """Vectors for item indices ``len(trained) .. size-1``.

    trained: [V0, D] the model's item table; vocab: item_idx, category (optional), count.
    Returns [size - V0, D].
    """
    v0 = len(trained)
    idx = vocab["item_idx"].to_numpy()
    known = vocab[(idx >= FIRST_ITEM) & (idx < v0)]
    counts = known["count"].to_numpy(dtype=np.float64) if "count" in known else np.ones(len(known))
    vectors = trained[known["item_idx"].to_numpy()]  # [N, D]
    if len(known) and counts.sum() > 0:
        prior = counts @ vectors / counts.sum()  # [D]
    elif len(known):
        prior = vectors.mean(axis=0)
    else:
        prior = np.zeros(trained.shape[1])
    rows = np.tile(prior, (max(size - v0, 0), 1)).astype(trained.dtype)  # [size - V0, D]
    if "category" not in vocab or not len(rows):
        return rows
    means = {
        cat: vectors[group].mean(axis=0)
        for cat, group in known.reset_index(drop=True).groupby("category").indices.items()
        if cat is not None
    }
    new = vocab[(idx >= v0) & (idx < size)]
    for item, cat in zip(new["item_idx"].to_numpy(), new["category"].to_numpy()):
        if cat in means:
            rows[item - v0] = means[cat]
    return rows
