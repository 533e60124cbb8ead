"""Candidate sources backed by the trained models: the two-tower's nearest items, and ALS.

Both read the live versions from the registry when a replica starts. The two-tower searches the live
item vector set with recsys/serve/vector_index.py (exact in memory, or pgvector HNSW for a large
catalog). User vectors come from Redis (precomputed by the pipeline), read by the features stage with
the user's state; when a user has new events and the vector is older than
`serve.user_vector_refresh_s`, the ONNX user tower recomputes it from the last views and it is written
back behind the response. A user with no history gets a cohort centroid (device x geo x the page's
category), held in memory.
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
from recsys.models.user_vectors import UserVectorStore, nearest_cohort
from recsys.serve.request import Candidate, RecRequest
from recsys.serve.resources import Resources

log = logging.getLogger(__name__)


class LiveModels:
    """The live two-tower (ONNX user tower, item vectors and their index, cohort centroids) and ALS
    factors, or None when absent."""

    def __init__(self, res: Resources):
        self.two_tower = self.als = self.items = None
        self.version = None
        self.cohorts: dict[str, np.ndarray] = {}
        try:
            with res.pool.connection(timeout=2) as conn:
                tt, als = registry.live(conn, "two_tower"), registry.live(conn, "als")
                live = vectors.live_version(conn, "retrieval")
                if tt and live:
                    skus, matrix = vectors.read_vectors(conn, live[0])
                    self.two_tower = OnnxUserTower(Path(tt.artifact_uri), live, skus, matrix)
                    self.items = res.vector_index(*live, skus, matrix)
                    self.version = tt.version
                    self.cohorts = UserVectorStore(res.store.r, res.store.p).cohorts(tt.version)
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
        stored = user.stored_vector if user.stored_vector and user.stored_vector[0] == version else None
        if stored is not None and (user.last_seen is None or user.last_seen <= stored[1] or now - stored[1] < self.refresh_s):
            return stored[2], "for you"
        vec = tt.user_vector(user.views, now) if user.views else None
        if vec is not None:
            if user.user_id:
                self.res.writes.redis(lambda pipe: self.store.queue_put(pipe, version, user.user_id, vec, now))
            return vec, "for you"
        category = None
        if req.skus and self.res.catalog is not None and req.skus[0] in self.res.catalog.items.index:
            category = self.res.catalog.items.at[req.skus[0], "category"]
        found = nearest_cohort(self.models.cohorts, req.device or user.device, req.geo or user.geo, category)
        return (found[1], f"popular with shoppers like you ({found[0]})") if found else (None, "")

    def fetch(self, req: RecRequest, user: UserState, n: int) -> list[Candidate]:
        if self.models.two_tower is None:
            return []
        query, reason = self._query(req, user)
        if query is None:
            return []
        return [Candidate(sku, score, self.name, [reason]) for sku, score in self.models.items.search(query, n)]


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
