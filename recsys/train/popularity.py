"""Popularity baseline, and the user x item matrix helper shared with ALS.

The bestseller list is the floor every personalised model must clear (and the fallback rail
when nothing else is known about a shopper).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {"view": 1.0, "cart": 4.0, "purchase": 10.0}


def interaction_matrix(
    sequences: Sequence[Sequence[int]], n_items: int, weights: Sequence[Sequence[float]] | None = None
) -> sp.csr_matrix:
    """Users x items CSR from per-user item lists (duplicates summed)."""
    rows = np.repeat(np.arange(len(sequences)), [len(s) for s in sequences])
    cols = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if len(sequences) else np.zeros(0, np.int64)
    vals = (
        np.concatenate([np.asarray(w, dtype=np.float32) for w in weights]) if weights is not None else np.ones(len(cols), np.float32)
    )
    m = sp.csr_matrix((vals, (rows, cols)), shape=(len(sequences), n_items), dtype=np.float32)
    m.sum_duplicates()
    return m


def event_matrix(
    events,
    user_col: str = "user_id",
    item_col: str = "sku",
    event_col: str | None = "event_type",
    weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS,
    users: Sequence | None = None,
    items: Sequence | None = None,
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Weighted users x items matrix from an event DataFrame (view < cart < purchase).

    Returns (matrix, user ids per row, item ids per column). Unknown event types weigh 1.
    """
    import pandas as pd

    users = pd.Index(pd.unique(events[user_col]) if users is None else users)
    items = pd.Index(pd.unique(events[item_col]) if items is None else items)
    r = users.get_indexer(events[user_col])
    c = items.get_indexer(events[item_col])
    if event_col and event_col in events:
        w = events[event_col].map(dict(weights)).fillna(1.0).to_numpy(np.float32)
    else:
        w = np.ones(len(events), np.float32)
    ok = (r >= 0) & (c >= 0)
    m = sp.csr_matrix((w[ok], (r[ok], c[ok])), shape=(len(users), len(items)), dtype=np.float32)
    m.sum_duplicates()
    return m, np.asarray(users), np.asarray(items)


def _topk_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


class PopularityRecommender:
    """Scores every item by its (weighted) interaction count in the training matrix."""

    def __init__(self):
        self.counts: np.ndarray | None = None
        self.user_items: sp.csr_matrix | None = None

    def fit(self, user_items: sp.csr_matrix) -> "PopularityRecommender":
        self.user_items = sp.csr_matrix(user_items)
        self.counts = np.asarray(self.user_items.sum(axis=0)).ravel().astype(np.float32)
        return self

    @property
    def n_items(self) -> int:
        return len(self.counts)

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        """(B, n_items): the same popularity row for every user (for full-ranking evaluation)."""
        return np.broadcast_to(self.counts, (len(user_rows), self.n_items)).copy()

    def recommend(self, user_rows, k: int = 10, exclude_seen: bool = True, user_items: sp.csr_matrix | None = None):
        rows = np.asarray(user_rows, dtype=np.int64)
        s = self.score(rows)
        if exclude_seen:
            ui = self.user_items if user_items is None else sp.csr_matrix(user_items)
            sub = ui[rows] if user_items is None else ui
            r, c = sub.nonzero()
            s[r, c] = -np.inf
        return _topk_rows(s, k)

    def similar_items(self, items, k: int = 10):
        """Not item-specific: the bestsellers, minus the query item."""
        items = np.asarray(items, dtype=np.int64)
        s = np.broadcast_to(self.counts, (len(items), self.n_items)).copy()
        s[np.arange(len(items)), items] = -np.inf
        return _topk_rows(s, k)
