"""How a user's interests retrieve: the ``embed`` settings the embed stage, request time and the
exported graph share (the rules themselves: ``interest.scoring.interests`` and, in the graph,
``interest.models.savedmodel``). Free of TensorFlow, so the batch function imports it cheaply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Retrieval:
    """How a user's interests retrieve (``embed`` settings; :func:`of` reads them)."""

    multi_interest: bool = True
    diversity: float = 0.0
    min_weight: float = 0.02
    max_cosine: float = 0.95
    because: int = 3  # history items behind each recommendation

    @classmethod
    def of(cls, embed: Any) -> Retrieval:
        """The settings of an ``EmbedConfig``."""
        return cls(
            multi_interest=embed.multi_interest,
            diversity=embed.diversity,
            min_weight=embed.interest_min_weight,
            max_cosine=embed.interest_max_cosine,
            because=embed.because_items,
        )


def category_codes(categories: np.ndarray | None) -> np.ndarray | None:
    """[V] category names -> [V] int codes (None stays None)."""
    return None if categories is None else np.unique(categories.astype(str), return_inverse=True)[1]
