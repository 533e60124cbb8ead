"""Training and offline evaluation: two-tower, ALS, popularity, metrics, splits.

Every recommender here has the same small interface (``Recommender``); modules import torch
or implicit only where they need them, so ``import recsys.train`` stays cheap.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np


class Recommender(Protocol):
    """What the serving and evaluation code expects of a retrieval model."""

    def fit(self, *args, **kwargs) -> "Recommender": ...

    def recommend(self, users, k: int = 10, exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and scores per user, shape (n_users, k)."""
        ...

    def similar_items(self, items: Sequence[int], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-k most similar items per query item (the item itself excluded)."""
        ...


__all__ = ["Recommender"]
