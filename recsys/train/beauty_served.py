"""Amazon Beauty through the served path: the two-tower's item vectors in a pgvector HNSW set (as
serving retrieves), the top 120 of each request re-ranked by LightGBM lambdarank, the first k as the
rail. Answers issue 14's question: does re-ranking keep what retrieval found?

The platform's own ranker reads 28 business features (price band, margin, stock, the accessory
graph) that Beauty does not have; this ranker reads what Beauty has, each known at request time:

- the retrieval score and rank (the two-tower, as served);
- ALS, fitted on the training prefixes, with the request's history folded in (as serving folds in a
  shopper ALS has not seen);
- popularity: log count in the training prefixes;
- the item-to-item signals: how often the candidate followed the last item, and how often it shared
  a shopper with the history's items (normalised by the history's length);
- tags (brand, category path): the candidate's overlap with the last item and with the history.

It learns on the validation requests (input: the training prefix; label: the validation item; every
feature from models fitted on the training prefixes only, so the scores it sees are out of time, as
they are online) and is applied to the test requests. Merchandising rules and MMR (the slot stage)
do not apply: Beauty has no price bands, margins or rule sets, so the rail is the ranker's top k.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.train.metrics import DEFAULT_KS, hr_ndcg_from_topk
from recsys.train.splits import LeaveOneOut

FEATURES = ("retrieval_score", "retrieval_rank", "als_score", "log_popularity", "follows_last",
            "co_history", "tags_last", "tags_history", "history_length")
CANDIDATES = 120


def _matrix(rows: list[np.ndarray], n_items: int) -> sp.csr_matrix:
    """Binary (len(rows), n_items) matrix of item lists."""
    indptr = np.cumsum([0] + [len(r) for r in rows])
    idx = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    m = sp.csr_matrix((np.ones(len(idx), np.float32), idx, indptr), shape=(len(rows), n_items))
    m.data[:] = 1.0
    return m


class ItemSignals:
    """Counts from the training prefixes that the features read."""

    def __init__(self, split: LeaveOneOut, n_items: int, tags: list[list[int]], n_tags: int, als):
        train = [np.asarray(s, dtype=np.int64) for s in split.train]
        self.n_items = n_items
        self.popularity = np.log1p(np.bincount(np.concatenate(train), minlength=n_items)).astype(np.float32)
        pairs = np.concatenate([np.stack([s[:-1], s[1:]], 1) for s in train if len(s) > 1])
        self.follows = sp.csr_matrix((np.ones(len(pairs), np.float32), (pairs[:, 0], pairs[:, 1])),
                                     shape=(n_items, n_items))
        users = _matrix(train, n_items)
        self.co = (users.T @ users).tocsr()
        self.co.setdiag(0)
        self.tags = _matrix([np.asarray(t, dtype=np.int64) for t in tags], max(n_tags, 1))
        self.tag_count = np.maximum(np.asarray(self.tags.sum(axis=1)).ravel(), 1.0)
        self.als = als

    def features(self, histories: list[np.ndarray], candidates: np.ndarray, scores: np.ndarray,
                 chunk: int = 2048) -> np.ndarray:
        """(n_requests * k, len(FEATURES)) for each request's candidates (-1 = none)."""
        parts = [self._features(histories[s : s + chunk], candidates[s : s + chunk], scores[s : s + chunk])
                 for s in range(0, len(histories), chunk)]
        return np.concatenate(parts).reshape(-1, len(FEATURES))

    def _features(self, histories, candidates, scores) -> np.ndarray:
        n, k = candidates.shape
        cand = np.maximum(candidates, 0)
        hist = _matrix(histories, self.n_items)
        last = np.array([h[-1] for h in histories])
        lengths = np.array([len(h) for h in histories], dtype=np.float32)[:, None]
        als = np.einsum("nd,nkd->nk", self.als.fold_in(hist), self.als.item_factors[cand])
        follows = np.asarray(self.follows[np.repeat(last, k), cand.ravel()]).reshape(n, k)
        co_history = np.take_along_axis((hist @ self.co).toarray(), cand, axis=1) / lengths
        tag_sim = ((self.tags[last] @ self.tags.T).toarray(), (hist @ self.tags @ self.tags.T).toarray() / lengths)
        tags_last, tags_history = (np.take_along_axis(t, cand, axis=1) / self.tag_count[cand] for t in tag_sim)
        columns = [scores, np.tile(np.arange(k, dtype=np.float32), (n, 1)), als, self.popularity[cand],
                   np.log1p(follows), np.log1p(co_history), tags_last, tags_history, np.repeat(lengths, k, axis=1)]
        x = np.stack(columns, axis=-1).astype(np.float32)
        x[candidates < 0] = np.nan
        return x


def retrieve(conn, version: str, items: np.ndarray, users: np.ndarray, seen: list[np.ndarray],
             k: int = CANDIDATES, ef_search: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (items, cosine scores) of each user vector through the HNSW set, history excluded."""
    from recsys.catalog import vectors

    found = np.full((len(users), k), -1, dtype=np.int64)
    scores = np.full((len(users), k), np.nan, dtype=np.float32)
    for row, (q, excluded) in enumerate(zip(users, seen)):
        excluded = set(np.asarray(excluded).tolist())
        vectors.set_ef_search(conn, max(ef_search, k + len(excluded)))
        hits = [(int(s), v) for s, v in vectors.search(conn, version, items.shape[1], q, k + len(excluded))
                if int(s) not in excluded][:k]
        found[row, : len(hits)] = [h[0] for h in hits]
        scores[row, : len(hits)] = [h[1] for h in hits]
    return found, scores


def fit_ranker(x: np.ndarray, candidates: np.ndarray, targets: np.ndarray, seed: int = 0):
    """LightGBM lambdarank on the requests whose target was retrieved; a fifth held out for early stopping."""
    import lightgbm as lgb

    n, k = candidates.shape
    labels = (candidates == targets[:, None]).astype(np.int32)
    useful = np.flatnonzero(labels.any(axis=1))
    rng = np.random.default_rng(seed)
    rng.shuffle(useful)
    cut = len(useful) // 5
    parts = {"valid": np.sort(useful[:cut]), "train": np.sort(useful[cut:])}
    x3 = x.reshape(n, k, -1)

    def dataset(rows, reference=None):
        return lgb.Dataset(x3[rows].reshape(len(rows) * k, -1), labels[rows].ravel(), group=np.full(len(rows), k),
                           feature_name=list(FEATURES), reference=reference, free_raw_data=False)

    train = dataset(parts["train"])
    params = {"objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "learning_rate": 0.05,
              "num_leaves": 31, "min_data_in_leaf": 100, "feature_fraction": 0.9, "bagging_fraction": 0.8,
              "bagging_freq": 1, "lambdarank_truncation_level": 20, "verbose": -1, "seed": seed,
              "num_threads": 2, "deterministic": True}
    booster = lgb.train(params, train, num_boost_round=500, valid_sets=[dataset(parts["valid"], train)],
                        callbacks=[lgb.early_stopping(30, verbose=False)])
    return booster, {"requests_with_target": float(len(useful)), "requests": float(n),
                     "best_iteration": float(booster.best_iteration)}


def rerank(booster, x: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    n, width = candidates.shape
    s = booster.predict(x, num_iteration=booster.best_iteration).reshape(n, width)
    s[candidates < 0] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(candidates, order, axis=1)


def served_metrics(model, split: LeaveOneOut, data: dict, dsn: str, name: str, als_config,
                   ks=DEFAULT_KS, log=print) -> dict:
    """HR/NDCG@ks of the served path on the test requests, beside retrieval order on the same lists."""
    import psycopg
    import torch

    from recsys.catalog import vectors
    from recsys.train.als import ALSRecommender
    from recsys.train.popularity import interaction_matrix
    from recsys.train.two_tower import EvalSet, inference_arrays

    n_items = data["n_items"]
    items = model.item_vectors().detach().cpu().numpy()
    als = ALSRecommender(als_config).fit(interaction_matrix(split.train, n_items))
    signals = ItemSignals(split, n_items, data["tags"], data["n_tags"], als)
    version = f"beauty-served-{name}"
    lists = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        vectors.write_vectors(conn, version, "beauty-eval", [str(i) for i in range(len(items))], items)
        vectors.prepare(conn)
        try:
            for part, evalset in (("valid", EvalSet.validation(split)), ("test", EvalSet.test(split))):
                arrays = inference_arrays(evalset.inputs, model.cfg, evalset.input_ts, evalset.target_ts)
                with torch.no_grad():
                    users = np.concatenate([model.user_vectors(arrays, np.arange(s, min(s + 2048, len(evalset.targets))))
                                            .cpu().numpy() for s in range(0, len(evalset.targets), 2048)])
                seen = [np.setdiff1d(s, [t]) for s, t in zip(evalset.seen, evalset.targets)]
                candidates, scores = retrieve(conn, version, items, users, seen)
                histories = [np.asarray(h, dtype=np.int64) for h in evalset.inputs]
                lists[part] = (candidates, signals.features(histories, candidates, scores), evalset.targets)
                log(f"[served] {part}: {len(candidates)} requests retrieved and featurised")
        finally:
            vectors.retire(conn, version)
            conn.execute("DELETE FROM vector_sets WHERE model_version = %s", (version,))
    booster, info = fit_ranker(lists["valid"][1], lists["valid"][0], lists["valid"][2])
    candidates, x, targets = lists["test"]
    served = rerank(booster, x, candidates, max(ks))
    out = {f"served.{m}": v for m, v in hr_ndcg_from_topk(served, targets, ks).items()}
    out |= {f"retrieval.{m}": v for m, v in hr_ndcg_from_topk(candidates[:, : max(ks)], targets, ks).items()}
    out[f"retrieval.HR@{CANDIDATES}"] = float((candidates == targets[:, None]).any(axis=1).mean())
    gains = booster.feature_importance("gain")
    out |= {f"gain.{f}": float(g / gains.sum()) for f, g in zip(FEATURES, gains)}
    return out | info
