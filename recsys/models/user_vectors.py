"""User vectors in Redis: precomputed for active users, and cohort centroids for users with none.

Training writes them (recsys.train.user_vectors computes them with the torch model); serving reads them
and writes back the vectors it recomputes with the ONNX user tower.

A cohort is device x geo x entry category (the category of a user's first interaction), with
coarser fallbacks (device x geo, device, everyone) so every new visitor gets some centroid.
Keys: `{prefix}u:{<user>}:vec` hash (beside the user's features, recsys.features.online_store.user_key) {version, ts, vector}; `{prefix}cohort:{version}` hash cohort -> vector.
"""

from __future__ import annotations

import time

import numpy as np
import redis

from recsys.features.online_store import user_key

ANY = "*"


def cohort_keys(device: str | None, geo: str | None, category: str | None) -> list[str]:
    """Most specific first."""
    d, g, c = device or ANY, geo or ANY, category or ANY
    return [f"{d}|{g}|{c}", f"{d}|{g}|{ANY}", f"{d}|{ANY}|{ANY}", f"{ANY}|{ANY}|{ANY}"]


class UserVectorStore:
    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int = 7 * 86400):
        self.r, self.p, self.ttl_s = client, prefix, ttl_s

    def put_users(self, version: str, vectors: dict[str, np.ndarray], now: float | None = None) -> None:
        now = time.time() if now is None else now
        pipe = self.r.pipeline(transaction=False)
        for user, vec in vectors.items():
            self.queue_put(pipe, version, user, vec, now)
        pipe.execute()

    def queue_put(self, pipe, version: str, user: str, vec: np.ndarray, now: float) -> None:
        """One user's vector written on `pipe` (serving writes the ones it recomputes behind the response)."""
        key = user_key(self.p, user, "vec")
        pipe.hset(key, mapping={"version": version, "ts": repr(now),
                                "vector": np.asarray(vec, dtype=np.float32).tobytes()})
        pipe.expire(key, self.ttl_s)

    def get_user(self, user: str, version: str) -> tuple[np.ndarray, float] | None:
        """(vector, computed-at) when a vector of this model version exists."""
        stored = self.parse(self.r.hgetall(user_key(self.p, user, "vec")))
        if stored is None or stored[0] != version:
            return None
        return stored[2], stored[1]

    def queue_get(self, pipe, user: str) -> None:
        """Read a user's stored vector on `pipe` (serving reads it with the user's state, in one round trip)."""
        pipe.hgetall(user_key(self.p, user, "vec"))

    @staticmethod
    def parse(raw: dict) -> tuple[str, float, np.ndarray] | None:
        """(model version, computed-at, vector) from the hash `queue_get` read; None when there is none."""
        if not raw or b"vector" not in raw:
            return None
        return raw.get(b"version", b"").decode(), float(raw[b"ts"]), np.frombuffer(raw[b"vector"], dtype=np.float32)

    def put_cohorts(self, version: str, centroids: dict[str, np.ndarray]) -> None:
        key = f"{self.p}cohort:{version}"
        pipe = self.r.pipeline()
        pipe.delete(key)
        pipe.hset(key, mapping={c: np.asarray(v, dtype=np.float32).tobytes() for c, v in centroids.items()})
        pipe.execute()

    def cohorts(self, version: str) -> dict[str, np.ndarray]:
        """Every cohort centroid of a model version (serving holds them in memory: a few hundred vectors)."""
        raw = self.r.hgetall(f"{self.p}cohort:{version}")
        return {name.decode(): np.frombuffer(vec, dtype=np.float32) for name, vec in raw.items()}

    def cohort(self, version: str, device: str | None, geo: str | None, category: str | None) -> tuple[str, np.ndarray] | None:
        return nearest_cohort(self.cohorts(version), device, geo, category)


def nearest_cohort(centroids: dict[str, np.ndarray], device: str | None, geo: str | None,
                   category: str | None) -> tuple[str, np.ndarray] | None:
    """The most specific cohort with a centroid, and its centroid."""
    for name in cohort_keys(device, geo, category):
        if name in centroids:
            return name, centroids[name]
    return None
