"""Candidate sources backed by the trained models: the two-tower's nearest items, and ALS.

Both serve the versions of the request's arm (recsys/release/arms.py; the live ones outside a canary),
loaded by the replica before it switches to them (Resources.models_for). The two-tower searches the live
item vector set with recsys/serve/vector_index.py (exact in memory, or pgvector HNSW for a large
catalog). User vectors come from Redis (precomputed by the pipeline), read by the features stage with
the user's state; when a user has new events and the vector is older than
`serve.user_vector_refresh_s`, the ONNX user tower recomputes it from the last views and it is written
back behind the response. A user with no history gets a cohort centroid (device x geo x the page's
category), held in memory.
"""

from __future__ import annotations

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

class ModelSet:
    """The models of one arm (kind -> version, recsys/release/arms.py): the two-tower (ONNX user tower,
    its item vectors and their index, cohort centroids), ALS factors and the ranker, each None when the
    arm names no version of its kind. Loading fails loudly: the caller keeps the arm it had."""

    def __init__(self, res: Resources, versions: dict[str, str]):
        from recsys.models.ranker import load_ranker

        self.versions = dict(versions)
        self.two_tower = self.als = self.items = self.ranker = None
        self.version = versions.get("two_tower")
        self.cohorts: dict[str, np.ndarray] = {}
        if not versions:   # nothing live yet: no models, and no connection to wait for
            return
        with res.pool.connection(timeout=5) as conn:
            if self.version:
                tt = registry.get(conn, self.version)
                row = conn.execute("SELECT dim FROM vector_sets WHERE model_version = %s AND state IN "
                                   "('ready', 'live')", (self.version,)).fetchone()
                if row is None:
                    raise LookupError(f"no item vector set for {self.version}")
                skus, matrix = vectors.read_vectors(conn, self.version)
                self.two_tower = OnnxUserTower(Path(tt.artifact_uri), (self.version, row[0]), skus, matrix)
                self.items = res.vector_index(self.version, row[0], skus, matrix)
                self.cohorts = UserVectorStore(res.store.r, res.store.p).cohorts(self.version)
            if versions.get("als"):
                self.als = ALSFactors(Path(registry.get(conn, versions["als"]).artifact_uri))
            if versions.get("ranker"):
                record = registry.get(conn, versions["ranker"])
                self.ranker = load_ranker(record.artifact_uri, record.config)


class TwoTowerANN:
    name = "two_tower"

    def __init__(self, res: Resources):
        self.res = res
        self.store = UserVectorStore(res.store.r, res.store.p)
        self.refresh_s = float(res.cfg.serve.user_vector_refresh_s)

    def _query(self, models: ModelSet, req: RecRequest, user: UserState) -> tuple[np.ndarray | None, str]:
        tt, version, now = models.two_tower, models.version, time.time()
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
        found = nearest_cohort(models.cohorts, req.device or user.device, req.geo or user.geo, category)
        return (found[1], f"popular with shoppers like you ({found[0]})") if found else (None, "")

    def fetch(self, req: RecRequest, user: UserState, n: int) -> list[Candidate]:
        models = self.res.models_of(req)
        if models.two_tower is None:
            return []
        query, reason = self._query(models, req, user)
        if query is None:
            return []
        return [Candidate(sku, score, self.name, [reason]) for sku, score in models.items.search(query, n)]


class ALSSource:
    name = "als"

    def __init__(self, res: Resources):
        self.res = res

    def fetch(self, req: RecRequest, user: UserState, n: int) -> list[Candidate]:
        als = self.res.models_of(req).als
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
