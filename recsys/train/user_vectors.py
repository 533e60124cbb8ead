"""User vectors in Redis: precomputed for active users, and cohort centroids for users with none.

A cohort is device x geo x entry category (the category of a user's first interaction), with
coarser fallbacks (device x geo, device, everyone) so every new visitor gets some centroid.
Keys: `{prefix}u:{<user>}:vec` hash (beside the user's features, recsys.features.online_store.user_key) {version, ts, vector}; `{prefix}cohort:{version}` hash cohort -> vector.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import redis

from recsys.features.online_store import user_key
from recsys.train.two_tower import TwoTowerModel, inference_arrays

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
            key = user_key(self.p, user, "vec")
            pipe.hset(key, mapping={"version": version, "ts": repr(now),
                                    "vector": np.asarray(vec, dtype=np.float32).tobytes()})
            pipe.expire(key, self.ttl_s)
        pipe.execute()

    def get_user(self, user: str, version: str) -> tuple[np.ndarray, float] | None:
        """(vector, computed-at) when a vector of this model version exists."""
        raw = self.r.hgetall(user_key(self.p, user, "vec"))
        if not raw or raw.get(b"version", b"").decode() != version:
            return None
        return np.frombuffer(raw[b"vector"], dtype=np.float32), float(raw[b"ts"])

    def put_cohorts(self, version: str, centroids: dict[str, np.ndarray]) -> None:
        key = f"{self.p}cohort:{version}"
        pipe = self.r.pipeline()
        pipe.delete(key)
        pipe.hset(key, mapping={c: np.asarray(v, dtype=np.float32).tobytes() for c, v in centroids.items()})
        pipe.execute()

    def cohort(self, version: str, device: str | None, geo: str | None, category: str | None) -> tuple[str, np.ndarray] | None:
        keys = cohort_keys(device, geo, category)
        for name, raw in zip(keys, self.r.hmget(f"{self.p}cohort:{version}", keys)):
            if raw is not None:
                return name, np.frombuffer(raw, dtype=np.float32)
        return None


def centroids(vectors: np.ndarray, profiles: pd.DataFrame, min_users: int) -> dict[str, np.ndarray]:
    """Normalised mean vector per cohort key (at every level of specificity) with >= min_users."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for vec, (device, geo, category) in zip(vectors, profiles[["device", "geo", "category"]].itertuples(index=False)):
        for key in cohort_keys(device, geo, category):
            sums[key] = sums.get(key, 0) + vec
            counts[key] = counts.get(key, 0) + 1
    out = {}
    for key, total in sums.items():
        if counts[key] >= min_users or key == f"{ANY}|{ANY}|{ANY}":
            out[key] = (total / max(np.linalg.norm(total), 1e-12)).astype(np.float32)
    return out


def publish(cfg, model: TwoTowerModel, catalog, data, events: pd.DataFrame, version: str) -> str:
    """Vectors from each user's full history (the holdout included: serving sees everything)."""
    from recsys.features.online_store import OnlineStore

    index = catalog.index
    ev = events.assign(item=events["sku"].map(index)).dropna(subset=["item"]).sort_values("ts", kind="stable")
    grouped = ev.groupby("user_id", sort=True)
    last = grouped.tail(1).set_index("user_id")
    first = grouped.head(1).set_index("user_id")
    users = last.index.to_numpy()
    histories = [g["item"].to_numpy(np.int64)[-model.cfg.max_len:] for _, g in grouped]
    stamps = [np.array([int(t.timestamp()) for t in g["ts"].iloc[-model.cfg.max_len:]]) for _, g in grouped]
    now = np.array([int(t.timestamp()) for t in last["ts"]])
    vecs = []
    for start in range(0, len(users), 2048):
        stop = start + 2048
        arrays = inference_arrays(histories[start:stop], model.cfg, stamps[start:stop], now[start:stop])
        vecs.append(model.user_vectors(arrays, np.arange(len(arrays.inputs))).cpu().numpy())
    vectors = np.concatenate(vecs) if vecs else np.zeros((0, model.cfg.dim), np.float32)

    category = catalog.items["category"].to_numpy()
    profiles = pd.DataFrame({"device": last["device"].to_numpy(), "geo": last["geo"].to_numpy(),
                             "category": [category[int(i)] for i in first.loc[users, "item"]]})
    store = UserVectorStore(OnlineStore.from_config(cfg).r, cfg.services.redis.key_prefix)
    cohorts = centroids(vectors, profiles, int(cfg.pipeline.cohort.min_users))
    store.put_cohorts(version, cohorts)
    cutoff = ev["ts"].max() - pd.Timedelta(days=float(cfg.pipeline.active_user_days))
    active = np.flatnonzero(last["ts"].to_numpy() >= cutoff)
    store.put_users(version, {str(users[i]): vectors[i] for i in active})
    return f"{len(cohorts)} cohort centroids, {len(active)} active users' vectors (of {len(users)})"
