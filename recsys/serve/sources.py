"""Candidate sources that need no trained model: bestsellers, trending, content-similar, accessory graph.

Each source is a small class with `fetch(request, user, n) -> [Candidate]`, best first.
"""

from __future__ import annotations

import heapq
import math
import time

import numpy as np

from recsys.features.online_store import UserState
from recsys.serve.request import Candidate, RecRequest
from recsys.serve.resources import Resources


class Bestsellers:
    """The static rail the personalised surfaces replace; also every surface's last fallback."""

    name = "bestsellers"

    def __init__(self, res: Resources):
        self.res = res

    def fetch(self, req: RecRequest, user: UserState, n: int) -> list[Candidate]:
        return [Candidate(sku, score, self.name, ["bestseller"]) for sku, score in self.res.bestsellers[:n]]


class Trending:
    """Decayed weighted activity over `features.trending_window_h` (a day), from the Redis ZSET the consumer keeps."""

    name = "trending"

    def __init__(self, res: Resources):
        self.res = res
        self.reuse_s = float(res.cfg.serve.trending_reuse_s)
        self._top: dict[int, tuple[float, list[Candidate]]] = {}   # n -> (read at, candidates)

    def fetch(self, req: RecRequest, user: UserState, n: int) -> list[Candidate]:
        """The same top-n for every request within `serve.trending_reuse_s`: a day's trend does not
        move in a second, and a Redis round trip per request costs more than it tells."""
        read_at, top = self._top.get(n, (-math.inf, []))
        if time.monotonic() - read_at >= self.reuse_s:
            top = [Candidate(sku, score, self.name, ["trending today"])
                   for sku, score in self.res.store.trending(n)]
            self._top[n] = (time.monotonic(), top)
        return top


class _ContentNeighbours:
    """Nearest neighbours of a query vector in the live content vector set (recsys/serve/vector_index.py)."""

    name = "content"

    def __init__(self, res: Resources):
        self.res = res
        self.session_views = int(res.cfg.serve.session_vector_views)

    def _search(self, anchors: list[str], n: int, reason: str) -> list[Candidate]:
        if self.res.content_index is None:
            return []
        found = [self.res.content_vectors[s] for s in anchors if s in self.res.content_vectors]
        if not found:
            return []
        query = np.mean(found, axis=0)
        query /= np.linalg.norm(query) or 1.0
        rows = self.res.content_index.search(query, n + len(anchors))
        anchor_set = set(anchors)
        return [Candidate(sku, float(score), self.name, [reason]) for sku, score in rows if sku not in anchor_set][:n]


class ContentSession(_ContentNeighbours):
    """Items like the ones the user viewed most recently (and what is in the cart)."""

    name = "content_session"

    def fetch(self, req: RecRequest, user: UserState, n: int) -> list[Candidate]:
        recent = [sku for sku, _ in user.views[: self.session_views]]
        return self._search(req.context_skus + recent, n, "similar to what you viewed")


class ContentItem(_ContentNeighbours):
    """Items like the SKU on the page."""

    name = "content_item"

    def fetch(self, req: RecRequest, user: UserState, n: int) -> list[Candidate]:
        return self._search(req.skus, n, f"similar to {req.skus[0]}" if req.skus else "")


class Accessories:
    """Accessories and parts that fit the page's SKU, the cart, or devices the user bought."""

    name = "accessories"

    def __init__(self, res: Resources):
        self.res = res
        self._popularity_of: list | None = None
        self._log_popularity: dict[str, float] = {}

    def _devices(self, req: RecRequest, user: UserState) -> list[str]:
        catalog = self.res.catalog
        devices: list[str] = []
        anchors = req.context_skus + sorted(user.purchased, key=user.purchased.get, reverse=True)
        for sku in anchors:
            if sku in catalog.accessories:
                devices.append(sku)
            else:  # an accessory on the page: what fits the devices it fits
                devices.extend(catalog.fits.get(sku, [])[:3])
        return list(dict.fromkeys(devices))

    def fetch(self, req: RecRequest, user: UserState, n: int) -> list[Candidate]:
        if self.res.catalog is None:
            return []
        popularity = self._popularity()
        best: dict[str, tuple[float, str]] = {}
        for rank, device in enumerate(self._devices(req, user)):
            for sku, weight in self.res.catalog.accessories.get(device, []):
                score = weight / (1 + rank) + 0.01 * popularity.get(sku, 0.0)
                if sku not in best or best[sku][0] < score:
                    best[sku] = (score, device)
        top = heapq.nlargest(n, best.items(), key=lambda kv: kv[1][0])
        return [Candidate(sku, score, self.name, [f"fits {device}"]) for sku, (score, device) in top]

    def _popularity(self) -> dict[str, float]:
        """log1p(bestseller score) per SKU, rebuilt when the bestsellers snapshot changes."""
        if self._popularity_of is not self.res.bestsellers:
            self._popularity_of = self.res.bestsellers
            self._log_popularity = {sku: math.log1p(score) for sku, score in self._popularity_of}
        return self._log_popularity


def _model_sources():
    from recsys.serve.model_sources import ALSSource, TwoTowerANN

    return (TwoTowerANN, ALSSource)


SOURCES = {cls.name: cls for cls in (Bestsellers, Trending, ContentSession, ContentItem, Accessories,
                                     *_model_sources())}
