"""Stage 4, rules and diversity: from the ranked pool to the k slots of the response.

The live merchandising rule set (recsys/rules) applies around diversity in a fixed order: blocks and
boosts/buries on the ranked pool, then MMR, then floors, caps and quotas, then pins
(recsys/rules/engine.py says how each resolves). Diversity is maximal marginal relevance (MMR) over item attributes (category and price band), with
lambda per surface: lambda 1 keeps the ranker's order, lower values trade relevance for spread. Two
items are as similar as the summed weights of the attributes they share: category weighs more than
price band, which has only a few values and would otherwise make everything look alike.
After MMR a surface's `long_tail_slots` give its last slots to candidates outside the head of the catalog
(`_long_tail`). Slots the pool cannot fill come from the surface's fallback (bestsellers, then the catalog).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Iterator

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from recsys.features.online_store import UserState
from recsys.rules.engine import Arranged, CompiledRuleSet
from recsys.rules.filters import ItemTable, RequestFacts
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


@dataclass
class Slate:
    """The slots stage's answer: the items in slot order, the rule set they were built under, and
    (explain=true) what its rules did."""

    items: list[dict]
    rule_set_version: str | None = None
    rules: dict | None = None


def request_facts(table: ItemTable, req: RecRequest, user: UserState) -> RequestFacts:
    """What a rule's condition and an `accessory_of_context` filter see of this request."""
    catalog, category, row_of = table.catalog, table.columns["category"], table.row_of
    cart = list(dict.fromkeys(req.cart + sorted(user.cart))) if user.cart else req.cart
    accessories = [a for sku in req.context_skus for a, _ in catalog.accessories.get(sku, ())]
    facts = RequestFacts(
        device=req.device or user.device, geo=req.geo or user.geo, context_sku=list(req.skus),
        context_category=[category[row_of[s]] for s in req.skus if s in row_of],
        cart_sku=cart, cart_category=[category[row_of[s]] for s in cart if s in row_of],
        cohort="new" if not user.known else "customer" if user.purchased else "returning")
    if accessories:   # the mask over the catalog is built when a filter first asks for it
        facts.accessory_rows = table.rows(accessories)
        facts.table_size = table.n + 1
    return facts


FITS_FIRST_BONUS = 2.0   # above any unit-range relevance minus MMR's largest penalty: those slots come first


def _unit_range(values: np.ndarray) -> np.ndarray:
    """Scores scaled to [0, 1], so that lambda means the same whatever the ranker's scale."""
    spread = float(np.ptp(values)) if len(values) else 0.0
    return (values - values.min()) / spread if spread > 0 else np.ones(len(values))


class Slots:
    """Rules, then MMR, then the fallback fill; `plain` is what is left when that fails."""

    def __init__(self, cfg, res: Resources):
        self.res = res
        self.surfaces = OmegaConf.to_container(cfg.surfaces, resolve=True)
        self.attributes = sorted({a for s in self.surfaces.values() for a in s["diversity"]["attributes"]})
        self._codes_for = None                    # the catalog snapshot the attribute codes come from
        self._row_of: dict[str, int] = {}         # sku -> row in that snapshot
        self._codes: dict[str, np.ndarray] = {}   # attribute -> its code per row
        self._catalog_rows([])                    # built now, not on the first request
        self._fallback_key, self._fallback_cache = None, None

    def select(self, req: RecRequest, user: UserState, candidates: list[Pooled], scores: list[Score]) -> Slate:
        self.res.refresh()
        return self.arrange(req, user, self.ranked(candidates, scores), self.res.rules.live)

    def _fits_first(self, req: RecRequest, ranked: list[tuple[Pooled, Score]], n: int) -> list[int]:
        """Positions in `ranked` of `n` candidates that fit a device on the page or in the cart (the
        accessory graph): those made for the model first, then generic fits, each in the ranker's order —
        what a product page's and a cart's rails are for. The ranker learns
        from a log where a phone's case is bought in a later session than the phone, so it cannot be
        left to find them (docs/quality.md)."""
        catalog = self.res.catalog
        if not n or catalog is None:
            return []
        fit: dict[str, float] = {}   # sku -> its best edge weight (1.0: made for that model)
        for sku in req.context_skus:
            for accessory, weight in catalog.accessories.get(sku, ()):
                fit[accessory] = max(weight, fit.get(accessory, 0.0))
        fitting = [i for i, (c, _) in enumerate(ranked) if c.sku in fit]
        return sorted(fitting, key=lambda i: -fit[ranked[i][0].sku])[:n]   # stable: ranker order among equals

    def _long_tail(self, req: RecRequest, pool: list[Pooled], picks: list[tuple[int, float]],
                   relevance: np.ndarray) -> list[tuple[int, float]]:
        """At least the surface's `long_tail_slots` of the picks outside the head (the most-interacted
        share of the catalog, Resources.head_skus): tail candidates the picks lack take the places of the
        last head picks, the most similar to the page or session first (content sources), then by
        relevance. Relevance alone fills a rail with the same best sellers for everyone (catalog coverage
        2.5%, no tail), and among the tail it favours the same few for everyone too; content similarity
        spreads the tail slots over twice as many SKUs for as many hits (docs/quality.md)."""
        n, head = int(self.surfaces[req.surface].get("long_tail_slots", 0)), self.res.head_skus
        if not n or not head:
            return picks
        chosen = {i for i, _ in picks}
        short = n - sum(pool[i].sku not in head for i in chosen)
        if short <= 0:
            return picks
        similarity = np.array([max((v for s, v in c.scores.items() if s.startswith("content")), default=-np.inf)
                               for c in pool])
        order = np.lexsort((-relevance, -similarity))
        extra = [int(i) for i in order if i not in chosen and pool[i].sku not in head][:short]
        free = max(0, self._k(req) - len(picks))                  # empty slots first, then the last head picks
        head_at = [j for j, (i, _) in enumerate(picks) if pool[i].sku in head]
        drop = set(head_at[::-1][: max(0, len(extra) - free)])
        extra = extra[: free + len(drop)]
        return [p for j, p in enumerate(picks) if j not in drop] + [(i, 0.0) for i in extra]

    def arrange(self, req: RecRequest, user: UserState, ranked: list[tuple[Pooled, Score]],
                rules: CompiledRuleSet | None) -> Slate:
        """The k slots from the ranked pool under `rules` (the live set, or a shadow or preview set)."""
        surface = self.surfaces[req.surface]
        k = self._k(req)
        excluded = excluded_skus(req, user, surface, self.res.catalog)
        relevance = _unit_range(np.array([s.value for _, s in ranked]))
        relevance[self._fits_first(req, ranked, int(surface.get("fits_first", 0)))] += FITS_FIRST_BONUS
        plan = None
        if rules is not None:
            facts = request_facts(rules.table, req, user)
            plan = rules.plan(req.surface, facts)
        if plan is None or not plan.rules:
            pool = [c for c, _ in ranked]
            picks = self._long_tail(req, pool, self._mmr(req, self._catalog_rows([c.sku for c in pool]), relevance),
                                    relevance)
            items = [self._item(req, ranked[i], i, penalty) for i, penalty in picks]
            done = Arranged([], inactive=plan.inactive) if plan is not None else None
            return self._slate(req, self._fill(req, items, self._fallback(excluded)), rules, done)
        table = rules.table
        done = Arranged([], inactive=plan.inactive)
        skus = [c.sku for c, _ in ranked]
        rows = self._catalog_rows(skus)
        if table.catalog is not self._codes_for:   # the rule set was compiled on another snapshot
            rows = table.rows(skus)
        blocked = plan.blocked(rows, facts)
        factor = plan.factors(rows, facts)
        if req.explain:
            done.blocked = {ranked[i][0].sku: by for i, by in zip(np.flatnonzero(blocked),
                                                                  plan.blocked_by(rows[blocked], facts))}
        if factor is not None:   # the scaled score, floored above 0 so that a multiplier always moves it
            relevance = (0.05 + 0.95 * relevance) * factor
        keep = np.flatnonzero(~blocked)
        kept = [ranked[i] for i in keep]
        relevance = relevance[keep]
        picks = self._mmr(req, rows[keep] if table.catalog is self._codes_for else self._catalog_rows(
            [c.sku for c, _ in kept]), relevance)
        picks = self._long_tail(req, [c for c, _ in kept], picks, relevance)
        penalties = dict(picks)
        order = np.array([i for i, _ in picks], dtype=np.int64)
        if len(kept) > len(order):   # then the rest by relevance
            rest = np.argsort(-relevance, kind="stable")
            picked = np.zeros(len(kept), dtype=bool)
            picked[order] = True
            order = np.concatenate([order, rest[~picked[rest]]])
        done = plan.arrange(rows[keep][order], k, facts, self._fallback_rows(table),
                            table.rows(list(excluded)), done)
        order = order.tolist()
        at = {kept[i][0].sku: i for i in order}
        boosted = plan.boost_notes(rows[keep], facts) if req.explain else {}
        items = []
        for sku in done.skus:
            notes = done.notes.get(sku, [])
            if sku in at:
                i = at[sku]
                item = self._item(req, kept[i], int(keep[i]), penalties.get(i, 0.0))
                notes = boosted.get(i, []) + notes
            else:
                drawn = bool(notes) and not notes[0].startswith("over a cap")
                item = self._filler(req, sku, "rules" if drawn else surface["fallback"],
                                    [n.split(": ", 1)[1] for n in notes] if drawn else ["fallback"])
            if req.explain:
                item["explain"]["rules"] = notes
            items.append(item)
        return self._slate(req, items, rules, done)

    def plain(self, req: RecRequest, user: UserState, candidates: list[Pooled], scores: list[Score]) -> Slate:
        """The ranker's top k without diversity, floors or pins, but never a blocked item: the
        fallback when `select` fails."""
        ranked = self.ranked(candidates, scores)
        excluded = excluded_skus(req, user, self.surfaces[req.surface], self.res.catalog)
        rules = self.res.rules.live
        more = self._fallback(excluded)
        if rules is not None:
            facts = request_facts(rules.table, req, user)
            plan = rules.plan(req.surface, facts)
            gone = plan.blocked(rules.table.rows([c.sku for c, _ in ranked]), facts)
            ranked = [pair for pair, out in zip(ranked, gone) if not out]
            more = (sku for sku in more if not plan.blocked(rules.table.rows([sku]), facts)[0])
        items = [self._item(req, pair, i, 0.0) for i, pair in enumerate(ranked[: self._k(req)])]
        return self._slate(req, self._fill(req, items, more), rules, None)

    def _fallback_rows(self, table: ItemTable) -> np.ndarray:
        """The fallback pool (bestsellers, then the catalog) as rows of `table`, in stock; kept until the
        table or the bestsellers change."""
        key = (id(table), id(self.res.bestsellers))
        if self._fallback_key != key:
            pool = list(dict.fromkeys(chain((sku for sku, _ in self.res.bestsellers), table.skus[:500])))
            rows = table.rows(pool)
            self._fallback_cache = rows[(rows >= 0) & table.in_stock[rows]]
            self._fallback_key = key
        return self._fallback_cache

    def _mmr(self, req: RecRequest, rows: np.ndarray, relevance: np.ndarray) -> list[tuple[int, float]]:
        """MMR over the pool whose catalog rows are `rows` (in ranked order)."""
        diversity = self.surfaces[req.surface]["diversity"]
        attributes = diversity["attributes"]   # name -> weight
        codes = self._attribute_codes(rows, list(attributes))
        weights = np.array(list(attributes.values()), dtype=float)
        return mmr(relevance, codes, weights / weights.sum(), float(diversity["lambda"]), self._k(req))

    @staticmethod
    def _slate(req: RecRequest, items: list[dict], rules: CompiledRuleSet | None, done: Arranged | None) -> Slate:
        if req.explain:
            for slot, item in enumerate(items, 1):
                item["explain"]["slot"] = slot
        version = rules.version if rules is not None else None
        return Slate(items, version, done.explain(version) if req.explain and done is not None else None)

    @staticmethod
    def _k(req: RecRequest) -> int:
        return max(1, min(int(req.k), 50))

    @staticmethod
    def ranked(candidates: list[Pooled], scores: list[Score]) -> list[tuple[Pooled, Score]]:
        return sorted(zip(candidates, scores), key=lambda pair: pair[1].value, reverse=True)

    def _catalog_rows(self, skus: list[str]) -> np.ndarray:
        """The SKUs' rows in the current catalog snapshot (-1: not in it); the rules' item table of
        the same snapshot numbers them alike."""
        catalog = self.res.catalog
        if catalog is not self._codes_for:
            self._row_of = {sku: i for i, sku in enumerate(catalog.items.index)} if catalog is not None else {}
            self._codes = {a: pd.factorize(catalog.items[a])[0] for a in self.attributes} if catalog is not None else {}
            self._codes_for = catalog
        get = self._row_of.get
        return np.array([get(sku, -1) for sku in skus], dtype=np.int64)

    def _attribute_codes(self, rows: np.ndarray, attributes: list[str]) -> np.ndarray:
        """One integer per row and attribute; a SKU the catalog lacks matches nothing (codes below -1;
        -1 is a missing value in the catalog)."""
        unknown = rows < 0
        columns = []
        for a in attributes:
            codes = self._codes[a][rows] if a in self._codes and len(rows) else np.full(len(rows), -2)
            if unknown.any():
                codes = np.where(unknown, -2 - np.arange(len(rows)), codes)
            columns.append(codes)
        return np.array(columns, dtype=np.int64).reshape(len(attributes), len(rows)).T

    @staticmethod
    def _item(req: RecRequest, pair: tuple[Pooled, Score], ranked_at: int, penalty: float) -> dict:
        c, score = pair
        item = {"sku": c.sku, "score": round(score.value, 4), "source": c.source, "reasons": c.reasons}
        if req.explain:
            strongest = sorted(score.contributions.items(), key=lambda kv: abs(kv[1]), reverse=True)
            item["explain"] = {"contributions": {name: round(v, 4) for name, v in strongest[:TOP_CONTRIBUTIONS]},
                               "rank": ranked_at + 1, "mmr_penalty": round(penalty, 4)}
        return item

    @staticmethod
    def _filler(req: RecRequest, sku: str, source: str, reasons: list[str]) -> dict:
        item = {"sku": sku, "score": 0.0, "source": source, "reasons": reasons}
        if req.explain:
            item["explain"] = {"contributions": {}, "rank": None, "mmr_penalty": 0.0}
        return item

    def _fallback(self, excluded: set[str]) -> Iterator[str]:
        """The surface's fallback pool (bestsellers, then the catalog), in stock and not excluded."""
        catalog = self.res.catalog
        pool = chain((sku for sku, _ in self.res.bestsellers), catalog.items.index[:500] if catalog is not None else ())
        return (sku for sku in pool if sku not in excluded and (catalog is None or sku in catalog.in_stock))

    def _fill(self, req: RecRequest, items: list[dict], more: Iterator[str]) -> list[dict]:
        """Fill the slots left over from the fallback pool."""
        fallback = self.surfaces[req.surface]["fallback"]
        taken = {i["sku"] for i in items}
        n = self._k(req) - len(items)
        for sku in more:
            if n <= 0:
                break
            if sku not in taken:
                taken.add(sku)
                n -= 1
                items.append(self._filler(req, sku, fallback, ["fallback"]))
        return items
