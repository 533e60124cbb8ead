"""Stage 4, rules and diversity: from the ranked pool to the k slots of the response.

Diversity is maximal marginal relevance (MMR) over item attributes (category and price band), with
lambda per surface: lambda 1 keeps the ranker's order, lower values trade relevance for spread. Two
items are as similar as the summed weights of the attributes they share: category weighs more than
price band, which has only a few values and would otherwise make everything look alike.
Slots the pool cannot fill come from the surface's fallback (bestsellers, then the catalog).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from recsys.features.online_store import UserState
from recsys.serve.request import Pooled, RecRequest, Score
from recsys.serve.resources import Resources
from recsys.serve.stages.retrieval import excluded_skus

TOP_CONTRIBUTIONS = 5   # how many contributions an explanation lists per slot


def mmr(relevance: np.ndarray, codes: np.ndarray, weights: np.ndarray, lam: float, k: int) -> list[tuple[int, float]]:
    """Pick k times the candidate with the best `lam * relevance - (1 - lam) * max similarity to the
    picks so far`, similarity being the summed weights (they add up to 1) of the attribute codes two
    candidates share. Returns (index, penalty paid) in slot order."""
    n = len(relevance)
    max_sim = np.zeros(n)
    taken = np.zeros(n, dtype=bool)
    picks = []
    for _ in range(min(k, n)):
        gain = lam * relevance - (1.0 - lam) * max_sim
        gain[taken] = -np.inf
        i = int(np.argmax(gain))
        picks.append((i, float((1.0 - lam) * max_sim[i])))
        taken[i] = True
        max_sim = np.maximum(max_sim, (codes == codes[i]) @ weights)
    return picks


def _unit_range(values: np.ndarray) -> np.ndarray:
    """Scores scaled to [0, 1], so that lambda means the same whatever the ranker's scale."""
    spread = float(np.ptp(values)) if len(values) else 0.0
    return (values - values.min()) / spread if spread > 0 else np.ones(len(values))


class Slots:
    """Rules, then MMR, then the fallback fill; `plain` is what is left when that fails."""

    def __init__(self, cfg, res: Resources):
        self.res = res
        self.surfaces = OmegaConf.to_container(cfg.surfaces, resolve=True)
        # Hook for the merchandising rule overlay (a later issue): an object with `version` and
        # `apply(req, user, ranked) -> ranked` over [(Pooled, Score)] in ranker order, run before
        # diversity. None: no rules, and the response's rule_set_version stays null.
        self.rules = None
        self.attributes = sorted({a for s in self.surfaces.values() for a in s["diversity"]["attributes"]})
        self._codes_for = None                    # the catalog snapshot the attribute codes come from
        self._codes: dict[str, dict[str, int]] = {}
        self._attribute_codes([], [])             # built now, not on the first request

    def select(self, req: RecRequest, user: UserState, candidates: list[Pooled], scores: list[Score]) -> list[dict]:
        self.res.refresh()
        surface = self.surfaces[req.surface]
        ranked = self._ranked(candidates, scores)
        if self.rules is not None:
            ranked = self.rules.apply(req, user, ranked)
        attributes = surface["diversity"]["attributes"]   # name -> weight
        codes = self._attribute_codes([c.sku for c, _ in ranked], list(attributes))
        weights = np.array(list(attributes.values()), dtype=float)
        picks = mmr(_unit_range(np.array([s.value for _, s in ranked])), codes, weights / weights.sum(),
                    float(surface["diversity"]["lambda"]), self._k(req))
        items = [self._item(req, ranked[i], i, penalty) for i, penalty in picks]
        return self._fill(req, user, items)

    def plain(self, req: RecRequest, user: UserState, candidates: list[Pooled], scores: list[Score]) -> list[dict]:
        """The ranker's top k without rules or diversity: the fallback when `select` fails."""
        ranked = self._ranked(candidates, scores)[: self._k(req)]
        return self._fill(req, user, [self._item(req, pair, i, 0.0) for i, pair in enumerate(ranked)])

    @staticmethod
    def _k(req: RecRequest) -> int:
        return max(1, min(int(req.k), 50))

    @staticmethod
    def _ranked(candidates: list[Pooled], scores: list[Score]) -> list[tuple[Pooled, Score]]:
        return sorted(zip(candidates, scores), key=lambda pair: pair[1].value, reverse=True)

    def _attribute_codes(self, skus: list[str], attributes: list[str]) -> np.ndarray:
        """One integer per SKU and attribute; a SKU the catalog lacks matches nothing (codes below -1;
        -1 is a missing value in the catalog)."""
        catalog = self.res.catalog
        if catalog is not self._codes_for:
            self._codes = {a: dict(zip(catalog.items.index, pd.factorize(catalog.items[a])[0].tolist()))
                           for a in self.attributes} if catalog is not None else {}
            self._codes_for = catalog
        columns = [[self._codes.get(a, {}).get(sku, -2 - j) for j, sku in enumerate(skus)] for a in attributes]
        return np.array(columns, dtype=np.int64).reshape(len(attributes), len(skus)).T

    @staticmethod
    def _item(req: RecRequest, pair: tuple[Pooled, Score], ranked_at: int, penalty: float) -> dict:
        c, score = pair
        item = {"sku": c.sku, "score": round(score.value, 4), "source": c.source, "reasons": c.reasons}
        if req.explain:
            strongest = sorted(score.contributions.items(), key=lambda kv: abs(kv[1]), reverse=True)
            item["explain"] = {"contributions": {name: round(v, 4) for name, v in strongest[:TOP_CONTRIBUTIONS]},
                               "rank": ranked_at + 1, "mmr_penalty": round(penalty, 4)}
        return item

    def _fill(self, req: RecRequest, user: UserState, items: list[dict]) -> list[dict]:
        """Fill the slots left over from the fallback (bestsellers, then the catalog), and number them."""
        surface = self.surfaces[req.surface]
        n = self._k(req) - len(items)
        taken = {i["sku"] for i in items} | excluded_skus(req, user, surface)
        catalog = self.res.catalog
        pool = [sku for sku, _ in self.res.bestsellers] if n > 0 else []
        if catalog is not None and n > 0:
            pool += list(catalog.items.index[:500])
        for sku in pool:
            if n == 0:
                break
            if sku not in taken and (catalog is None or sku in catalog.in_stock):
                taken.add(sku)
                n -= 1
                item = {"sku": sku, "score": 0.0, "source": surface["fallback"], "reasons": ["fallback"]}
                if req.explain:
                    item["explain"] = {"contributions": {}, "rank": None, "mmr_penalty": 0.0}
                items.append(item)
        if req.explain:
            for slot, item in enumerate(items, 1):
                item["explain"]["slot"] = slot
        return items
