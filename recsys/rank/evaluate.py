"""NDCG@k over request lists with graded labels (purchase 3 > cart 2 > view 1 > nothing 0).

recsys.train.metrics computes NDCG for one held-out target per user; ranking lists have several graded
positives, so this uses the usual gain 2^rel - 1 (LightGBM's lambdarank default) over the ideal order.
Ties keep the retrieval order, so a constant scorer scores exactly what retrieval order scores.
"""

from __future__ import annotations

import numpy as np

from recsys.rank.offline import TrainingLists


def ndcg_at_k(scores: np.ndarray, lists: TrainingLists, k: int = 12) -> float:
    """Mean NDCG@k over the lists that have at least one positive."""
    off = lists.offsets
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    values = []
    for i in range(len(lists.group)):
        y = lists.y[off[i]:off[i + 1]].astype(np.float64)
        if not y.any():
            continue
        s = np.asarray(scores[off[i]:off[i + 1]], dtype=np.float64)
        gain = 2.0 ** y - 1.0
        order = np.argsort(-s, kind="stable")[:k]
        ideal = np.sort(gain)[::-1][:k]
        values.append(float(gain[order] @ discount[: len(order)]) / float(ideal @ discount[: len(ideal)]))
    return float(np.mean(values)) if values else float("nan")


def retrieval_order_scores(lists: TrainingLists) -> np.ndarray:
    """Retrieval's own order as scores (the candidate blend order the ranker must beat)."""
    off = lists.offsets
    return -np.concatenate([np.arange(off[i + 1] - off[i]) for i in range(len(lists.group))]) \
        if len(lists.group) else np.zeros(0)


def compare(valid: TrainingLists, rankers: dict, k: int = 12) -> dict[str, float]:
    """NDCG@k of retrieval order and of each ranker (anything with `score(X)`)."""
    out = {f"retrieval_order_ndcg@{k}": ndcg_at_k(retrieval_order_scores(valid), valid, k)}
    for name, ranker in rankers.items():
        out[f"{name}_ndcg@{k}"] = ndcg_at_k(ranker.score(valid.X), valid, k)
    out["valid_lists"] = float(len(valid.group))
    return out
