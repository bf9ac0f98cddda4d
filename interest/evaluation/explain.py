"""Looking at what the encoders attend to: heatmaps, top items, and how to check explanations.

The attention weights say which history steps the user vector drew on. They are a signal about
the model, not a proof that those steps caused anything (see README, "How to read the
explanations"): these helpers make them visible and measurable against known structure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global backend state, fine headless and in notebooks

from interest.data.reader import split_view
from interest.models.encoders import Encoder
from interest.schema import SEQUENCE_FEATURES

HEATMAP_SIZE = (12.0, 4.0)  # inches at 100 dpi per figure row group
DPI = 100


def attention_matrices(encoder: Encoder, rows: dict[str, np.ndarray], split: str = "infer") -> np.ndarray:
    """[N, L, L] per-position attention (row t explains the state after step t) for ``rows``."""
    import tensorflow as tf

    batch = {f: tf.constant(rows[f]) for f in SEQUENCE_FEATURES}
    inputs, _ = split_view(batch, split)
    return np.asarray(encoder(inputs, training=False, return_matrix=True)["attention_matrix"])


def plot_attention(
    matrices: Sequence[np.ndarray],
    items: Sequence[np.ndarray],
    labels: Sequence[Sequence[str]],
    titles: Sequence[str],
    path: Path,
    last: int = 20,
) -> Path:
    """One heatmap per user: rows = the user's state after each of the last ``last`` steps,
    columns = the history steps it could attend to, labelled (e.g. by item category)."""
    n = len(matrices)
    fig = Figure(figsize=HEATMAP_SIZE, dpi=DPI)
    axes = fig.subplots(1, n, squeeze=False)
    for ax, m, it, lab, title in zip(axes[0], matrices, items, labels, titles):
        real = np.flatnonzero(np.asarray(it) > 0)[-last:]
        sub = m[np.ix_(real, real)]
        ax.imshow(sub, cmap="viridis", vmin=0.0, vmax=max(float(sub.max()), 1e-6), aspect="auto")
        ticks = [str(lab[i]) for i in real]
        ax.set_xticks(range(len(real)), ticks, rotation=90, fontsize=6)
        ax.set_yticks(range(len(real)), ticks, fontsize=6)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("history step (attended)", fontsize=7)
    axes[0][0].set_ylabel("state after step", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def interest_shares(
    item_lists: Sequence[Sequence[str]], interests: Sequence[set[str]], category_of: dict[str, str]
) -> np.ndarray:
    """Per user [N]: the share of their listed items whose category is one of their interests
    (NaN where none of the items has a known category): for explanations (top items) and, as
    controls, for the items uninformed attention would list."""
    shares = np.full(len(item_lists), np.nan)
    for n, (items, wanted) in enumerate(zip(item_lists, interests)):
        cats = [category_of.get(i) for i in items if i in category_of]
        if cats:
            shares[n] = np.mean([c in wanted for c in cats])
    return shares
