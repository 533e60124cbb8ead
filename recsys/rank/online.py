"""The online side of the ranking features: a request, the user's Redis state and the pooled candidates
turned into the same `RankContext` the offline builder fills, then `features.compute`."""

from __future__ import annotations

import math
import time

import numpy as np

from recsys.features.online_store import OnlineStore, UserState
from recsys.rank.features import COUNTER_KEYS, SCORE_COLUMNS, SOURCE_COLUMNS, ItemTable, RankContext, compute
from recsys.serve.request import Pooled, RecRequest


def source_scores(candidates: list[Pooled]) -> np.ndarray:
    """(n, len(SCORE_COLUMNS)) with each source's own score, NaN where it did not propose the item;
    a column fed by several sources (content_session, content_item) keeps the best. Built in plain
    Python lists: indexing a numpy array element by element costs more than the whole request's math."""
    width = len(SCORE_COLUMNS)
    rows = []
    for c in candidates:
        row = [math.nan] * width
        for source, score in c.scores.items():
            j = _COLUMN_OF_SOURCE.get(source)
            if j is not None and not row[j] >= score:   # NaN compares False: the first score fills it
                row[j] = score
        rows.append(row)
    return np.array(rows, dtype=np.float64).reshape(len(candidates), width)


_COLUMN_OF_SOURCE = {source: SCORE_COLUMNS.index(column) for source, column in SOURCE_COLUMNS.items()
                     if column in SCORE_COLUMNS}


def context(req: RecRequest, user: UserState, candidates: list[Pooled], counters: np.ndarray, now: float) -> RankContext:
    """`candidates` in retrieval (blend) order; `counters` as OnlineStore.counter_matrix returns them."""
    skus = [c.sku for c in candidates]
    cart = list(dict.fromkeys(list(req.cart) + sorted(user.cart)))
    return RankContext(surface=req.surface, now=now, device=req.device or user.device, page_skus=list(req.skus),
                       cart=cart, views=list(user.views), purchased=dict(user.purchased),
                       category_affinity=dict(user.category_affinity), candidates=skus,
                       source_scores=source_scores(candidates), counters=counters)


class OnlineFeatures:
    """Feature matrices for serving. `counters` answers `counter_matrix(skus, keys, now)`: the online
    store (a Redis call per request), or a serving replica's snapshot of it (recsys/serve/item_counters.py)."""

    def __init__(self, counters: OnlineStore, items: ItemTable):
        self.store, self.items = counters, items

    def matrix(self, req: RecRequest, user: UserState, candidates: list[Pooled], now: float | None = None
               ) -> np.ndarray:
        now = time.time() if now is None else now
        counters = self.store.counter_matrix([c.sku for c in candidates], list(COUNTER_KEYS), now=now)
        return compute(context(req, user, candidates, counters, now), self.items)
