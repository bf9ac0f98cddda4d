"""A leakage sentinel: a rule with no model that ranks candidates by identifier adjacency.

If a pipeline breaks ties in time by item id, the next item of a sequence tends to be the id that
follows the last one in sort order, and this rule, which knows nothing but ids, beats chance.
Identifiers carry no meaning in real traffic, so on a sound pipeline it sits at chance level:
``k / (negatives + 1)`` for HR@k with sampled negatives.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from interest.schema import FIRST_ITEM
from interest.scoring.metrics import evaluate_scores


def id_adjacency_scores(item_ids: Sequence[str], last_items: np.ndarray) -> np.ndarray:
    """Scores [N, V]: the sooner a candidate's id follows the user's last item id in string order
    (wrapping around), the higher. ``item_ids`` [V] by index (pad and unknown included)."""
    ids = np.asarray([str(i) for i in item_ids], dtype=object)
    n = len(ids)
    order = np.argsort(ids[FIRST_ITEM:], kind="stable") + FIRST_ITEM
    position = np.zeros(n, dtype=np.int64)
    position[order] = np.arange(len(order))
    m = len(order)
    gap = (position[None, :] - position[np.asarray(last_items)][:, None]) % m  # [N, V]
    gap = np.where(gap == 0, m, gap)  # the last item itself comes last
    scores = -gap.astype(np.float64)
    scores[:, :FIRST_ITEM] = -np.inf
    return scores


def id_adjacency_metrics(
    item_ids: Sequence[str],
    rows: dict[str, np.ndarray],
    k: int = 10,
    negatives: int = 100,
    seeds: tuple[int, ...] = (1, 2, 3),
) -> dict[str, float]:
    """The rule's test metrics on sequence rows (the test target is the last step, its input
    the step before), with the same protocol as the models; adds ``chance_hr@k``."""
    items = rows["item_idx"]
    targets, last = items[:, -1].astype(np.int64), items[:, -2].astype(np.int64)
    out = evaluate_scores(
        lambda a, b: id_adjacency_scores(item_ids, last[a:b]),
        rows.get("history_idx", items),
        targets,
        len(item_ids),
        k=k,
        negatives=negatives,
        seeds=seeds,
        batch=256,
    )
    out[f"chance_hr@{k}"] = k / (negatives + 1)
    return out
