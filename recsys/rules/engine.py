"""A rule set applied to one request's ranked pool, in the fixed order the slots stage documents:

1. **blocks**: a matching item leaves the pool, the fallback fill and the pins;
2. **boosts / buries**: a matching item's relevance (the ranker's score scaled to (0.05, 1] over the
   pool) is multiplied by each factor;
   -- then MMR diversity picks the slots' order (recsys/serve/stages/slots.py) --
3. **quotas and count floors** (at least n slots matching), highest priority first, drawing the
   best-placed matching items from the pool, then from the fallback pool, then from the catalog;
   **caps** (at most n per brand or category) hold throughout unless the rail could not otherwise be
   filled; **average margin floors** swap the lowest-margin slot for the highest-margin item left
   while the mean is below the floor; the kept items stay in the order MMR gave them;
4. **pins**: a SKU at its slot, last, so nothing moves it; two pins on one slot: the higher priority
   wins (then the earlier rule); a blocked, out-of-stock or excluded SKU (already in the cart, bought,
   the page's own) is not pinned.

Everything is deterministic: ties break by the rule set's order, then by the pool's order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from recsys.rules.filters import ItemTable, RequestFacts, compile_filter, evaluate, matches_request
from recsys.rules.schema import RuleSet

CATALOG_DRAW = 50   # matching catalog items (best sellers first) a quota or a count floor may draw on


@dataclass
class Arranged:
    """What the rules made of a request: the SKUs in slot order and what each rule did."""

    skus: list[str]
    notes: dict[str, list[str]] = field(default_factory=dict)   # sku -> what rules did to it
    blocked: dict[str, str] = field(default_factory=dict)       # sku removed from the pool -> rule id
    inactive: dict[str, str] = field(default_factory=dict)      # rule id -> why it did not apply here
    unmet: dict[str, str] = field(default_factory=dict)         # rule id -> why it could not hold
    pins: dict[str, int] = field(default_factory=dict)          # rule id -> slot, for each pin that applied
    pinned: dict[str, int] = field(default_factory=dict)        # rule id -> slot, for each pin honoured

    def explain(self, version: str) -> dict:
        return {"version": version, "blocked": self.blocked, "inactive": self.inactive, "unmet": self.unmet,
                "pins": {rule: {"slot": slot, "honoured": rule in self.pinned} for rule, slot in self.pins.items()}}


class CompiledRuleSet:
    """A rule set compiled against one catalog snapshot (its filters as masks over the catalog)."""

    def __init__(self, version: str, ruleset: RuleSet, table: ItemTable, popularity: list[str] = ()):
        self.version, self.ruleset, self.table = version, ruleset, table
        self.rules = list(ruleset.rules)
        self.masks = {r.id: compile_filter(r.filter, table) for r in self.rules if hasattr(r, "filter")}
        self.windows = {r.id: r.window.bounds() for r in self.rules if r.window is not None}
        # catalog draw for quotas and count floors: matching in-stock rows, best sellers first
        rank = np.full(table.n + 1, table.n, dtype=np.int64)
        for i, sku in enumerate(popularity):
            row = table.row_of.get(sku)
            if row is not None:
                rank[row] = min(rank[row], i)
        self.popularity_order = np.lexsort((np.arange(table.n), rank[:-1]))
        margins = np.nan_to_num(table.columns["margin"], nan=0.0)
        self.margins = margins
        self.floor_masks = {r.id: margins >= r.margin for r in self.rules if r.kind == "margin_floor"}
        self.block_any = None   # every static block at once, for the plain fallback
        static = [self.masks[r.id] for r in self.rules if r.kind == "block" and isinstance(self.masks[r.id], np.ndarray)]
        if static:
            self.block_any = np.logical_or.reduce(static)

    # -- which rules apply to this request ------------------------------------------------------------
    def active(self, surface: str, facts: RequestFacts, now: float | None = None) -> tuple[list, dict[str, str]]:
        now = time.time() if now is None else now
        active, inactive = [], {}
        for rule in self.rules:
            if surface not in rule.surfaces:
                continue
            window = self.windows.get(rule.id)
            if window is not None and not (window[0] <= now < window[1]):
                inactive[rule.id] = "outside its time window"
            elif rule.when is not None and not matches_request(rule.when, facts):
                inactive[rule.id] = "its condition does not hold for this request"
            else:
                active.append(rule)
        return active, inactive

    # -- 1 and 2: blocks and boosts over the ranked pool --------------------------------------------------
    def blocked(self, rules: list, rows: np.ndarray, facts: RequestFacts) -> tuple[np.ndarray, list[str | None]]:
        """A mask of the rows some active block removes, and the first such block's id per row."""
        mask = np.zeros(len(rows), dtype=bool)
        by = [None] * len(rows)
        for rule in rules:
            if rule.kind == "block":
                hit = evaluate(self.masks[rule.id], rows, facts) & ~mask
                for i in np.flatnonzero(hit):
                    by[i] = rule.id
                mask |= hit
        return mask, by

    def factors(self, rules: list, rows: np.ndarray, facts: RequestFacts) -> tuple[np.ndarray, dict[int, list[str]]]:
        """The relevance multiplier of each row (boosts and buries multiply), and notes by row."""
        factor = np.ones(len(rows))
        notes: dict[int, list[str]] = {}
        for rule in rules:
            if rule.kind in ("boost", "bury"):
                hit = evaluate(self.masks[rule.id], rows, facts)
                factor[hit] *= rule.factor
                for i in np.flatnonzero(hit):
                    notes.setdefault(int(i), []).append(f"{rule.id}: relevance x{rule.factor:g}")
        return factor, notes

    # -- 3 and 4: floors, caps, quotas, then pins ---------------------------------------------------------
    def arrange(self, rules: list, order: list[str], k: int, facts: RequestFacts, more: Iterable[str] = (),
                excluded: frozenset[str] | set[str] = frozenset(), result: Arranged | None = None) -> Arranged:
        """The k slots from `order` (the pool after blocks, in MMR order, then by relevance), drawing on
        `more` (the fallback pool) when the rules or the rail's length need it."""
        out = result or Arranged([])
        table = self.table
        caps = [r for r in rules if r.kind == "cap"]
        minimums = sorted((r for r in rules if r.kind == "quota" or (r.kind == "margin_floor" and not r.average)),
                          key=lambda r: -r.priority)
        averages = sorted((r for r in rules if r.kind == "margin_floor" and r.average), key=lambda r: -r.priority)
        blocks = [r for r in rules if r.kind == "block"]

        pool = list(dict.fromkeys(order))
        if len(pool) < k or caps or minimums or averages:   # what else the rules may need to draw on
            pool = self._extend(pool, more, minimums, blocks, facts, excluded, k)
        rows = table.rows(pool)
        n = len(pool)
        taken = np.zeros(n, dtype=bool)
        selected: list[int] = []
        notes: dict[int, list[str]] = {}
        keys = [table.columns[c.by][rows] for c in caps]
        counts: list[dict] = [{} for _ in caps]

        def fits(i: int) -> bool:
            return all(counts[j].get(keys[j][i], 0) < c.max for j, c in enumerate(caps))

        def take(i: int) -> None:
            taken[i] = True
            selected.append(i)
            for j in range(len(caps)):
                counts[j][keys[j][i]] = counts[j].get(keys[j][i], 0) + 1

        mins = [(r, self._min_mask(r, rows, facts)) for r in minimums]
        for rule, mask in mins:
            have = int(mask[selected].sum()) if selected else 0
            for i in np.flatnonzero(mask & ~taken):
                if have >= self._needed(rule, k) or len(selected) >= k:
                    break
                if fits(int(i)):
                    take(int(i))
                    have += 1
                    notes.setdefault(int(i), []).append(f"{rule.id}: kept for its {rule.kind.replace('_', ' ')}")
            if have < self._needed(rule, k):
                out.unmet[rule.id] = f"{have} of {self._needed(rule, k)} slots: not enough matching items"
        for i in range(n):
            if len(selected) >= k:
                break
            if not taken[i] and fits(i):
                take(i)
        if len(selected) < k and caps:   # the rail's length wins over a cap
            for i in range(n):
                if len(selected) >= k:
                    break
                if not taken[i]:
                    take(i)
                    notes.setdefault(i, []).append("over a cap: nothing else could fill the rail")
                    for c in caps:
                        out.unmet.setdefault(c.id, "exceeded: too few other items to fill the rail")
        margins = self.margins[rows]
        for rule in averages:
            self._raise_average(rule, margins, selected, taken, mins, fits, caps, keys, counts, notes, out, k)
        selected.sort()
        skus = [pool[i] for i in selected]
        out.notes = {pool[i]: v for i, v in notes.items() if taken[i]}
        return self._pin(rules, skus, k, facts, excluded, out)

    @staticmethod
    def _needed(rule, k: int) -> int:
        return min(rule.slots if rule.kind == "quota" else rule.at_least, k)

    def _min_mask(self, rule, rows: np.ndarray, facts: RequestFacts) -> np.ndarray:
        if rule.kind == "quota":
            return evaluate(self.masks[rule.id], rows, facts)
        return self.floor_masks[rule.id][rows]

    def _extend(self, pool: list[str], more: Iterable[str], minimums: list, blocks: list, facts: RequestFacts,
                excluded, k: int) -> list[str]:
        """The pool, then up to 4k fallback SKUs, then the best-selling catalog items each quota or count
        floor matches; without blocked SKUs and without those the request excludes."""
        seen = set(pool)
        extra: list[str] = []
        more = iter(more)
        while len(extra) < 4 * k:   # in chunks, so that blocked SKUs do not count
            chunk = []
            for sku in more:
                if sku not in seen:
                    seen.add(sku)
                    chunk.append(sku)
                    if len(chunk) >= 4 * k:
                        break
            if not chunk:
                break
            extra += self._unblocked(chunk, blocks, facts)
        for rule in minimums:
            mask = self.masks[rule.id] if rule.kind == "quota" else self.floor_masks[rule.id]
            rows = self.popularity_order
            if not isinstance(mask, np.ndarray):   # it depends on the request: the context's accessories
                if facts.accessory_rows is None:
                    continue
                rows = facts.accessory_rows[facts.accessory_rows >= 0]
                mask = np.zeros(self.table.n + 1, dtype=bool)
                mask[rows] = evaluate(self.masks[rule.id], rows, facts)
            drawn = []
            for row in rows:
                if len(drawn) >= CATALOG_DRAW:
                    break
                if mask[row] and self.table.in_stock[row]:
                    sku = self.table.skus[row]
                    if sku not in seen and sku not in excluded:
                        seen.add(sku)
                        drawn.append(sku)
            extra += self._unblocked(drawn, blocks, facts)
        return pool + extra

    def _unblocked(self, skus: list[str], blocks: list, facts: RequestFacts) -> list[str]:
        if not skus or not blocks:
            return skus
        rows = self.table.rows(skus)
        gone = np.zeros(len(skus), dtype=bool)
        for rule in blocks:
            gone |= evaluate(self.masks[rule.id], rows, facts)
        return [sku for sku, out in zip(skus, gone) if not out]

    def _raise_average(self, rule, margins, selected, taken, mins, fits, caps, keys, counts, notes, out, k) -> None:
        """Swap the lowest-margin slot (one no quota or count floor needs) for the highest-margin item
        left that fits the caps, while the rail's mean margin is below the floor."""
        for _ in range(k):
            if not selected or margins[selected].mean() >= rule.margin:
                return
            needed = {i for r, mask in mins for i in selected
                      if mask[i] and int(mask[selected].sum()) <= self._needed(r, k)}
            droppable = [i for i in selected if i not in needed]
            if not droppable:
                break
            drop = min(droppable, key=lambda i: (margins[i], -i))
            for j, c in enumerate(caps):
                counts[j][keys[j][drop]] -= 1
            options = [i for i in np.flatnonzero(~taken) if margins[i] > margins[drop] and fits(int(i))]
            if not options:
                for j, c in enumerate(caps):
                    counts[j][keys[j][drop]] += 1
                break
            add = int(max(options, key=lambda i: (margins[i], -i)))
            selected.remove(drop)
            taken[drop] = False
            notes.pop(drop, None)
            taken[add] = True
            selected.append(add)
            for j in range(len(caps)):
                counts[j][keys[j][add]] = counts[j].get(keys[j][add], 0) + 1
            notes.setdefault(add, []).append(f"{rule.id}: brought in for the rail's average margin")
        if selected and margins[selected].mean() < rule.margin:
            out.unmet[rule.id] = f"average margin {margins[selected].mean():.3f} < {rule.margin}: no better items"

    def _pin(self, rules: list, skus: list[str], k: int, facts: RequestFacts, excluded, out: Arranged) -> Arranged:
        pins = sorted((r for r in rules if r.kind == "pin"), key=lambda r: -r.priority)
        winners: dict[int, str] = {}
        by_sku: dict[str, str] = {}
        for rule in pins:
            out.pins[rule.id] = rule.slot
            row = self.table.row_of.get(rule.sku, -1)
            reason = None
            if rule.slot > k:
                reason = f"slot {rule.slot} is beyond the rail's {k}"
            elif rule.slot in winners:
                reason = f"slot {rule.slot} is taken by a pin of higher priority"
            elif rule.sku in by_sku:
                reason = f"{rule.sku} is pinned by {by_sku[rule.sku]}"
            elif row < 0:
                reason = f"{rule.sku} is not in the catalog"
            elif not self.table.in_stock[row]:
                reason = f"{rule.sku} is out of stock"
            elif rule.sku in excluded:
                reason = f"{rule.sku} is excluded here (in the cart, bought, or the page's own)"
            else:
                blocked, by = self.blocked(rules, np.array([row]), facts)
                if blocked[0]:
                    reason = f"{rule.sku} is blocked by {by[0]}"
            if reason:
                out.unmet[rule.id] = reason
                continue
            winners[rule.slot] = rule.sku
            by_sku[rule.sku] = rule.id
            out.pinned[rule.id] = rule.slot
        if not winners:
            out.skus = skus
            return out
        others = [s for s in skus if s not in by_sku]
        # the pins displace the last items, sparing those a quota or a floor put there
        over = len(others) + len(winners) - k
        kept = {s for s, notes in out.notes.items() if any("kept for" in n or "brought in" in n for n in notes)}
        for protect in (True, False):
            for i in range(len(others) - 1, -1, -1):
                if over <= 0:
                    break
                if not (protect and others[i] in kept):
                    del others[i]
                    over -= 1
        others = iter(others)
        final = []
        for slot in range(1, k + 1):
            sku = winners.get(slot) or next(others, None)
            if sku is None:
                break
            final.append(sku)
        final += [winners[s] for s in sorted(winners) if winners[s] not in final]   # pins past a short rail
        for sku, rule_id in by_sku.items():
            out.notes.setdefault(sku, []).append(f"{rule_id}: pinned at slot {out.pinned[rule_id]}")
        out.skus = final
        return out
