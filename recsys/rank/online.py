"""The online side of the ranking features: a request, the user's Redis state and the pooled candidates
turned into the same `RankContext` the offline builder fills, then `features.compute`."""

from __future__ import annotations

import time

import numpy as np

from recsys.features.online_store import OnlineStore, UserState
from recsys.rank.features import COUNTER_KEYS, SCORE_COLUMNS, SOURCE_COLUMNS, ItemTable, RankContext, compute
from recsys.serve.request import Pooled, RecRequest


def source_scores(candidates: list[Pooled]) -> np.ndarray:
    """(n, len(SCORE_COLUMNS)) with each source's own score, NaN where it did not propose the item;
    a column fed by several sources (content_session, content_item) keeps the best."""
    out = np.full((len(candidates), len(SCORE_COLUMNS)), np.nan)
    cols = {c: j for j, c in enumerate(SCORE_COLUMNS)}
    for i, c in enumerate(candidates):
        for source, score in c.scores.items():
            j = cols.get(SOURCE_COLUMNS.get(source, ""))
            if j is not None:
                out[i, j] = score if np.isnan(out[i, j]) else max(out[i, j], score)
    return out


def counter_matrix(skus: list[str], counters: dict[str, dict[str, float]]) -> np.ndarray:
    return np.array([[counters.get(s, {}).get(k, 0.0) for k in COUNTER_KEYS] for s in skus],
                    dtype=np.float64).reshape(len(skus), len(COUNTER_KEYS))


def context(req: RecRequest, user: UserState, candidates: list[Pooled], counters: dict[str, dict[str, float]],
            now: float) -> RankContext:
    """`candidates` in retrieval (blend) order; `counters` as OnlineStore.item_counters returns them."""
    skus = [c.sku for c in candidates]
    cart = list(dict.fromkeys(list(req.cart) + sorted(user.cart)))
    return RankContext(surface=req.surface, now=now, device=req.device or user.device, page_skus=list(req.skus),
                       cart=cart, views=list(user.views), purchased=dict(user.purchased),
                       category_affinity=dict(user.category_affinity), candidates=skus,
                       source_scores=source_scores(candidates), counters=counter_matrix(skus, counters))


class OnlineFeatures:
    """Feature matrices for serving: one pipelined Redis read for the candidates' counters."""

    def __init__(self, store: OnlineStore, items: ItemTable):
        self.store, self.items = store, items

    def matrix(self, req: RecRequest, user: UserState, candidates: list[Pooled], now: float | None = None
               ) -> np.ndarray:
        now = time.time() if now is None else now
        counters = self.store.item_counters([c.sku for c in candidates], now=now, keys=list(COUNTER_KEYS))
        return compute(context(req, user, candidates, counters, now), self.items)
