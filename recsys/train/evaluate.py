"""Offline evaluation on the platform's own log: NDCG@12, recall@120, catalog coverage@12 and
long-tail share@12 on a time holdout, for every retrieval model through the same code, and the
two-tower measured a second time through the pgvector HNSW index as serving queries it."""

from __future__ import annotations

import numpy as np
import psycopg
import torch

from recsys.catalog import vectors
from recsys.train.dataset import CatalogArrays, SequenceData
from recsys.train.metrics import SeenIndex, evaluate_full_ranking, hr_ndcg_from_topk, long_tail_mask
from recsys.train.two_tower import TwoTowerModel, inference_arrays

RECENT_FOR_CONTENT = 5


def _eval_rows(data: SequenceData, n: int, rng) -> np.ndarray:
    """Positions into data.target_users / data.targets, a fixed random subset."""
    size = min(n, len(data.targets))
    return np.sort(rng.choice(len(data.targets), size=size, replace=False))


def _purchased(data: SequenceData, catalog: CatalogArrays) -> list[np.ndarray]:
    """What serving excludes: items each user bought before the cutoff."""
    index, row = catalog.index, {u: i for i, u in enumerate(data.users)}
    bought = [[] for _ in data.users]
    train = data.holdout.train
    for user, sku in train.loc[train["type"] == "purchase_completed", ["user_id", "sku"]].itertuples(index=False):
        if user in row and sku in index:
            bought[row[user]].append(index[sku])
    return [np.asarray(b, dtype=np.int64) for b in bought]


def user_vectors(model: TwoTowerModel, data: SequenceData, users: np.ndarray) -> torch.Tensor:
    """Each user's vector at the holdout cutoff (the last gap is measured to the target's time)."""
    target_ts = data.holdout.targets.set_index("user_id").loc[[data.users[u] for u in users], "t"].to_numpy()
    arrays = inference_arrays([data.train[u] for u in users], model.cfg, [data.train_ts[u] for u in users], target_ts)
    return model.user_vectors(arrays, np.arange(len(users)))


def synthetic_report(cfg, model: TwoTowerModel, als, catalog: CatalogArrays, data: SequenceData, rng) -> dict:
    ks = tuple(int(k) for k in cfg.pipeline.ks)
    picks = _eval_rows(data, int(cfg.pipeline.eval_users), rng)
    users, targets = data.target_users[picks], data.targets[picks]
    bought = _purchased(data, catalog)
    seen = SeenIndex([bought[u] for u in users])
    counts = np.bincount(np.concatenate(data.train), minlength=len(catalog.skus))
    tail = long_tail_mask(counts)
    items = model.item_vectors().detach()
    user_vecs = user_vectors(model, data, users)
    content = torch.as_tensor(catalog.content) if catalog.content is not None else None

    scorers = {
        "popularity": lambda rows: np.tile(counts.astype(np.float32), (len(rows), 1)),
        "als": lambda rows: als.score(users[rows]),
        "two_tower": lambda rows: user_vecs[rows] @ items.T,
    }
    if content is not None:
        def content_scores(rows):
            recent = [torch.as_tensor(data.train[u][-RECENT_FOR_CONTENT:]) for u in users[rows]]
            queries = torch.stack([content[r].mean(dim=0) for r in recent])
            return queries @ content.T
        scorers["content"] = content_scores
    report = {}
    for name, score in scorers.items():
        m = evaluate_full_ranking(score, targets, seen, ks=ks, batch_size=512, long_tail=tail, coverage_k=min(ks))
        report[f"{name}.ndcg@{min(ks)}"] = m[f"NDCG@{min(ks)}"]
        report[f"{name}.recall@{max(ks)}"] = m[f"HR@{max(ks)}"]
        report[f"{name}.coverage@{min(ks)}"] = m[f"coverage@{min(ks)}"]
        report[f"{name}.long_tail_share@{min(ks)}"] = m[f"long_tail_share@{min(ks)}"]
    report["eval_users"] = float(len(users))
    return report


def ann_report(conn: psycopg.Connection, version: str, model: TwoTowerModel, catalog: CatalogArrays,
               data: SequenceData, rng, cfg, n_users: int = 1000) -> dict:
    """The two-tower through the HNSW index: NDCG@12 / recall@120 of what serving would retrieve,
    and the index's recall against exact search."""
    ks = tuple(int(k) for k in cfg.pipeline.ks)
    k = max(ks)
    picks = _eval_rows(data, n_users, rng)
    users, targets = data.target_users[picks], data.targets[picks]
    bought = _purchased(data, catalog)
    user_vecs = user_vectors(model, data, users).cpu().numpy()
    items = model.item_vectors().detach().cpu().numpy()
    index = catalog.index
    ann_lists, overlap = [], []
    vectors.prepare(conn)
    for u, q, target in zip(users, user_vecs, targets):
        excluded = set(bought[u].tolist()) - {int(target)}  # as in the exact evaluation
        vectors.set_ef_search(conn, max(vectors.hnsw_params(cfg.embedding, "retrieval")[2], k + len(excluded)))
        rows = vectors.search(conn, version, items.shape[1], q, k + len(excluded))
        found = [index[sku] for sku, _ in rows if index[sku] not in excluded][:k]
        exact = np.argsort(-(items @ q))
        exact = [i for i in exact[: k + len(excluded)] if i not in excluded][:k]
        overlap.append(len(set(found) & set(exact)) / k)
        ann_lists.append(found + [-1] * (k - len(found)))
    m = hr_ndcg_from_topk(np.array(ann_lists), targets, ks)
    return {f"two_tower_ann.ndcg@{min(ks)}": m[f"NDCG@{min(ks)}"], f"two_tower_ann.recall@{k}": m[f"HR@{k}"],
            f"ann.recall_vs_exact@{k}": float(np.mean(overlap))}
