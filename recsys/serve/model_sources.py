"""Candidate sources backed by the trained models: two-tower ANN over pgvector, and ALS.

Both read the live versions from the registry when a replica starts. User vectors come from Redis
(precomputed by the pipeline); when a user has new events and the vector is older than
`serve.user_vector_refresh_s`, the ONNX user tower recomputes it from the last views and writes it
back. A user with no history gets a cohort centroid (device x geo x the page's category).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from recsys import registry
from recsys.catalog import vectors
from recsys.features.online_store import UserState
from recsys.models.als import ALSFactors
from recsys.models.two_tower import OnnxUserTower
from recsys.models.user_vectors import UserVectorStore
from recsys.serve.request import Candidate, RecRequest
from recsys.serve.resources import Resources

log = logging.getLogger(__name__)


class LiveModels:
    """The live two-tower (ONNX user tower, item vectors) and ALS factors, or None when absent."""

    def __init__(self, res: Resources):
        self.two_tower = self.als = None
        self.version = None
        try:
            with res.pool.connection(timeout=2) as conn:
                tt, als = registry.live(conn, "two_tower"), registry.live(conn, "als")
                live = vectors.live_version(conn, "retrieval")
                if tt and live:
                    skus, matrix = vectors.read_vectors(conn, live[0])
                    self.two_tower = OnnxUserTower(Path(tt.artifact_uri), live, skus, matrix)
                    self.version = tt.version
                if als:
                    self.als = ALSFactors(Path(als.artifact_uri))
        except Exception as exc:
            log.warning("live models not loaded: %s", exc)


class TwoTowerANN:
    name = "two_tower"

    def __init__(self, res: Resources):
        self.res = res
        self.models = res.live_models()
        self.store = UserVectorStore(res.store.r, res.store.p)
        self.refresh_s = float(res.cfg.serve.user_vector_refresh_s)

    def _query(self, req: RecRequest, user: UserState) -> tuple[np.ndarray | None, str]:
        tt, version, now = self.models.two_tower, self.models.version, time.time()
        cached = self.store.get_user(user.user_id, version) if user.user_id else None
        fresh = cached is not None and (user.last_seen is None or user.last_seen <= cached[1]
                                        or now - cached[1] < self.refresh_s)
        if fresh:
            return cached[0], "for you"
        vec = tt.user_vector(user.views, now) if user.views else None
        if vec is not None:
            self.store.put_users(version, {user.user_id: vec}, now=now)
            return vec, "for you"
        category = None
        if req.skus and self.res.catalog is not None and req.skus[0] in self.res.catalog.items.index:
            category = self.res.catalog.items.at[req.skus[0], "category"]
        found = self.store.cohort(version, req.device or user.device, req.geo or user.geo, category)
        return (found[1], f"popular with shoppers like you ({found[0]})") if found else (None, "")

    def fetch(self, req: RecRequest, user: UserState, n: int) -> list[Candidate]:
        tt = self.models.two_tower
        if tt is None:
            return []
        query, reason = self._query(req, user)
        if query is None:
            return []
        with self.res.pool.connection(timeout=1) as conn:
            rows = vectors.search(conn, tt.vector_set, tt.dim, query, n)
        return [Candidate(sku, float(score), self.name, [reason]) for sku, score in rows]


class ALSSource:
    name = "als"

    def __init__(self, res: Resources):
        self.res = res
        self.models = res.live_models()

    def fetch(self, req: RecRequest, user: UserState, n: int) -> list[Candidate]:
        als = self.models.als
        if als is None:
            return []
        index = als.index
        rows = [index[s] for s, _ in user.views if s in index] + [index[s] for s in req.context_skus if s in index]
        vec = als.user_vector(user.user_id, rows if user.user_id not in als.users else [])
        if vec is None:
            return []
        scores = als.items @ vec
        top = np.argpartition(-scores, min(n, len(scores) - 1))[:n]
        top = top[np.argsort(-scores[top])]
        return [Candidate(als.skus[i], float(scores[i]), self.name, ["shoppers with similar taste bought"])
                for i in top]
