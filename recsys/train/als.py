"""Implicit-feedback ALS (the ``implicit`` package) behind the project's recommender interface.

A strong, cheap collaborative baseline and a retrieval source of its own. Event types are
weighted (view < cart < purchase) into one confidence matrix; ``partial_fit_*`` fold new
users/items in without a full refit, which is what the nightly job cannot wait for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit warns (and is slower) otherwise

import numpy as np
import scipy.sparse as sp

from recsys.train.popularity import DEFAULT_EVENT_WEIGHTS, event_matrix  # noqa: F401  (re-export)


@dataclass
class ALSConfig:
    factors: int = 64
    regularization: float = 0.05
    alpha: float = 10.0
    iterations: int = 15
    num_threads: int = 0
    seed: int = 0


class ALSRecommender:
    """fit(user x item confidences) / recommend / similar_items / partial_fit_users / partial_fit_items."""

    def __init__(self, config: ALSConfig | dict | None = None):
        self.config = config if isinstance(config, ALSConfig) else ALSConfig(**(config or {}))
        self.model = None
        self.user_items: sp.csr_matrix | None = None

    def _new_model(self):
        from implicit.cpu.als import AlternatingLeastSquares

        c = self.config
        return AlternatingLeastSquares(
            factors=c.factors, regularization=c.regularization, alpha=c.alpha, iterations=c.iterations,
            num_threads=c.num_threads, random_state=c.seed, calculate_training_loss=False,
        )

    def fit(self, user_items: sp.csr_matrix, show_progress: bool = False) -> "ALSRecommender":
        from threadpoolctl import threadpool_limits

        self.user_items = sp.csr_matrix(user_items, dtype=np.float32)
        with threadpool_limits(1, "blas"):  # OpenBLAS threads fight ALS's own threads
            self.model = self._new_model()
            self.model.fit(self.user_items, show_progress=show_progress)
        return self

    def fit_events(self, events, weights=DEFAULT_EVENT_WEIGHTS, **cols) -> "ALSRecommender":
        """Fit on an event DataFrame; keeps ``user_ids`` / ``item_ids`` (row/column -> id)."""
        m, self.user_ids, self.item_ids = event_matrix(events, weights=weights, **cols)
        return self.fit(m)

    @property
    def user_factors(self) -> np.ndarray:
        return np.asarray(self.model.user_factors)

    @property
    def item_factors(self) -> np.ndarray:
        return np.asarray(self.model.item_factors)

    @property
    def n_items(self) -> int:
        return self.item_factors.shape[0]

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        """(B, n_items) dot-product scores for fitted users (for full-ranking evaluation)."""
        return self.user_factors[np.asarray(user_rows, dtype=np.int64)] @ self.item_factors.T

    def fold_in(self, user_items: sp.csr_matrix) -> np.ndarray:
        """Factors for unseen users from their interactions, model unchanged."""
        ui = sp.csr_matrix(user_items, dtype=np.float32)
        return np.asarray(self.model.recalculate_user(np.arange(ui.shape[0]), ui))

    def recommend(self, user_rows, k: int = 10, exclude_seen: bool = True, user_items: sp.csr_matrix | None = None):
        """Top-k for fitted user rows; with ``user_items`` (rows aligned to ``user_rows``) the users
        are folded in from those interactions instead (new or changed users)."""
        rows = np.asarray(user_rows, dtype=np.int64)
        ui = self.user_items[rows] if user_items is None else sp.csr_matrix(user_items, dtype=np.float32)
        ids, scores = self.model.recommend(
            rows, ui, N=k, filter_already_liked_items=exclude_seen, recalculate_user=user_items is not None
        )
        return np.asarray(ids), np.asarray(scores)

    def similar_items(self, items, k: int = 10):
        items = np.asarray(items, dtype=np.int64)
        ids, scores = self.model.similar_items(items, N=k + 1)
        ids, scores = np.asarray(ids), np.asarray(scores)
        out_i = np.zeros((len(items), k), dtype=np.int64)
        out_s = np.zeros((len(items), k), dtype=np.float32)
        for j, it in enumerate(items):
            keep = ids[j] != it
            out_i[j] = ids[j][keep][:k]
            out_s[j] = scores[j][keep][:k]
        return out_i, out_s

    def partial_fit_users(self, user_rows, user_items: sp.csr_matrix) -> "ALSRecommender":
        """Recompute (or add, for rows >= n_users) these users' factors from their interactions."""
        rows = np.asarray(user_rows, dtype=np.int64)
        ui = sp.csr_matrix(user_items, dtype=np.float32)
        self.model.partial_fit_users(rows, ui)
        self.user_items = _set_rows(self.user_items, rows, ui)
        return self

    def partial_fit_items(self, item_cols, item_users: sp.csr_matrix) -> "ALSRecommender":
        """Recompute (or add) these items' factors from their (items x users) interactions."""
        cols = np.asarray(item_cols, dtype=np.int64)
        iu = sp.csr_matrix(item_users, dtype=np.float32)
        self.model.partial_fit_items(cols, iu)
        self.user_items = _set_rows(self.user_items.T.tocsr(), cols, iu).T.tocsr()
        return self


def _set_rows(m: sp.csr_matrix, rows: np.ndarray, new: sp.csr_matrix) -> sp.csr_matrix:
    """Replace (and grow to include) rows of a CSR matrix."""
    n_rows = max(m.shape[0], int(rows.max()) + 1 if len(rows) else 0)
    n_cols = max(m.shape[1], new.shape[1])
    m = sp.csr_matrix(m)
    m.resize((n_rows, n_cols))
    keep = np.ones(n_rows, dtype=bool)
    keep[rows] = False
    base = sp.diags(keep.astype(np.float32)) @ m
    scatter = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, np.arange(len(rows)))), shape=(n_rows, new.shape[0]))
    new = sp.csr_matrix(new)
    new.resize((new.shape[0], n_cols))
    return sp.csr_matrix(base + scatter @ new)
