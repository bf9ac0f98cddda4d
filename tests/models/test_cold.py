"""Starting vectors for items newer than the model: their category's mean, else the popularity prior."""

from __future__ import annotations

import numpy as np
import pandas as pd

from interest.models.cold import cold_item_rows


def test_new_items_start_at_their_category_mean_or_the_popularity_prior():
    trained = np.array([[0, 0], [0, 0], [1, 0], [3, 0], [0, 2], [0, 4]], dtype=np.float32)  # [6, 2]; 0, 1 reserved
    vocab = pd.DataFrame(
        {
            "item_idx": [2, 3, 4, 5, 6, 7, 8],
            "category": ["a", "a", "b", "b", "b", None, "new-cat"],
            "count": [1, 1, 1, 3, 5, 1, 1],
        }
    )
    rows = cold_item_rows(trained, vocab, 9)
    assert rows.shape == (3, 2)
    np.testing.assert_allclose(rows[0], [0, 3])  # item 6 in b: the mean of items 4 and 5
    prior = (1 * trained[2] + 1 * trained[3] + 1 * trained[4] + 3 * trained[5]) / 6  # count-weighted
    np.testing.assert_allclose(rows[1], prior)  # no category
    np.testing.assert_allclose(rows[2], prior)  # a category no trained item has
    assert cold_item_rows(trained, vocab, 6).shape == (0, 2)  # nothing new
