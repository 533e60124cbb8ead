"""The user vectors and cohort centroids the pipeline publishes, computed with the torch model; how they
are stored, and what a cohort is, lives in recsys.models.user_vectors (serving reads them there)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.models.user_vectors import ANY, UserVectorStore, cohort_keys
from recsys.train.two_tower import TwoTowerModel, inference_arrays


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
