"""A rule set applied to one request's ranked pool, in the fixed order the slots stage documents
(docs/merchandising.md):

1. **blocks**: a matching item leaves the pool, the fallback fill and the pins;
2. **boosts / buries**: a matching item's relevance (the ranker's score scaled to (0.05, 1] over the
   pool) is multiplied by each factor;
   -- then MMR diversity picks the slots' order (recsys/serve/stages/slots.py) --
3. **quotas and count floors** (at least n slots matching), highest priority first, take the
   best-placed matching items of the pool; **caps** (at most n per brand or category) hold throughout
   unless the rail could not otherwise be filled; **average margin floors** swap the lowest-margin slot
   for the highest-margin item left while the mean is below the floor; the kept items stay in the
   order MMR gave them. Only when the pool cannot satisfy them does the engine draw on the fallback
   pool and on the best-selling matching catalog items;
4. **pins**: a SKU at its slot, last, so nothing moves it; two pins on one slot: the higher priority
   wins (then the earlier rule); a blocked, out-of-stock or excluded SKU (already in the cart, bought,
   the page's own) is not pinned. Pins displace the last slots, sparing those a quota or floor placed.

Everything is deterministic: ties break by the rule set's order, then by the pool's order.

Speed (`rules.apply.p95_ms`): a request's active rules are folded into a `Plan` once per distinct
combination (cached): every static block becomes one mask over the catalog, every static boost one
factor array, so blocks and boosts cost two indexing operations whatever their number; the catalog
draws of quotas and floors are precomputed; the pool is extended only when it cannot satisfy the rules.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from recsys.rules.filters import ItemTable, RequestFacts, compile_condition, compile_filter, evaluate
from recsys.rules.schema import RuleSet

CATALOG_DRAW = 50    # at most this many matching catalog items (best sellers first) per quota or count floor
PLAN_CACHE = 512     # distinct (surface, active rules) combinations kept folded


@dataclass
class Arranged:
    """What the rules made of a request: the SKUs in slot order and what each rule did."""

    skus: list[str]
    notes: dict[str, list[str]] = field(default_factory=dict)   # sku -> what rules did to it (explain)
    blocked: dict[str, str] = field(default_factory=dict)       # sku removed from the pool -> rule id (explain)
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
        for r in self.rules:
            if r.kind == "margin_floor" and not r.average:
                self.masks[r.id] = table.margin >= r.margin
        self.windows = {r.id: r.window.bounds() for r in self.rules if r.window is not None}
        # best sellers first, then the catalog's order: where quotas and floors draw from
        rank = np.full(table.n, table.n, dtype=np.int64)
        for i, sku in enumerate(popularity):
            row = table.row_of.get(sku)
            if row is not None:
                rank[row] = min(rank[row], i)
        by_popularity = np.lexsort((np.arange(table.n), rank))
        self.draws = {}
        for r in self.rules:
            mask = self.masks.get(r.id)
            if r.kind in ("quota", "margin_floor") and isinstance(mask, np.ndarray):
                matching = by_popularity[mask[by_popularity] & table.in_stock[by_popularity]]
                self.draws[r.id] = matching[: 4 * CATALOG_DRAW]   # room for blocked and excluded ones
        # per surface: (rule, its window or None, its compiled condition or None), in the set's order
        self.by_surface: dict[str, list] = {}
        for r in self.rules:
            entry = (r, self.windows.get(r.id), compile_condition(r.when) if r.when is not None else None)
            for surface in r.surfaces:
                self.by_surface.setdefault(surface, []).append(entry)
        self._plans: dict[tuple, Plan] = {}

    def active(self, surface: str, facts: RequestFacts | None, now: float | None = None) -> tuple[list, dict[str, str]]:
        """The rules that apply to this request, and why each other rule of the surface does not."""
        now = time.time() if now is None else now
        active, inactive = [], {}
        for rule, window, condition in self.by_surface.get(surface, ()):
            if window is not None and not (window[0] <= now < window[1]):
                inactive[rule.id] = "outside its time window"
            elif condition is not None and (facts is None or not condition(facts)):
                inactive[rule.id] = "its condition does not hold for this request"
            else:
                active.append(rule)
        return active, inactive

    def plan(self, surface: str, facts: RequestFacts | None, now: float | None = None) -> Plan:
        """The active rules folded for this request (cached per distinct combination)."""
        active, inactive = self.active(surface, facts, now)
        key = (surface, tuple(r.id for r in active))
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= PLAN_CACHE:
                self._plans.clear()
            plan = self._plans[key] = Plan(self, active)
        return plan.with_inactive(inactive)


class Plan:
    """One combination of active rules, folded: what `Slots.arrange` applies to a request."""

    def __init__(self, compiled: CompiledRuleSet, rules: list, inactive: dict[str, str] | None = None):
        self.compiled, self.table, self.rules = compiled, compiled.table, rules
        self.inactive = inactive or {}
        masks = compiled.masks
        static = lambda r: isinstance(masks[r.id], np.ndarray)   # noqa: E731
        blocks = [r for r in rules if r.kind == "block"]
        self.blocks = blocks
        self.block_mask = np.logical_or.reduce([masks[r.id] for r in blocks if static(r)]) \
            if any(static(r) for r in blocks) else None
        self.dynamic_blocks = [r for r in blocks if not static(r)]
        boosts = [r for r in rules if r.kind in ("boost", "bury")]
        self.boosts = boosts
        self.factor = None
        for r in boosts:
            if static(r):
                self.factor = np.ones(self.table.n + 1) if self.factor is None else self.factor
                self.factor[masks[r.id]] *= r.factor
        self.dynamic_boosts = [r for r in boosts if not static(r)]
        # caps on one attribute fold into the tightest; codes as lists: a list index beats a dict lookup
        tightest: dict[str, tuple] = {}
        for r in rules:
            if r.kind == "cap" and (r.by not in tightest or r.max < tightest[r.by][1]):
                tightest[r.by] = (r, r.max)
        self.cap_rules = [r for r in rules if r.kind == "cap"]
        self.caps = [(r, self.table.codes[by], most, int(self.table.codes[by].max(initial=0)) + 3)
                     for by, (r, most) in tightest.items()]
        order = {r.id: i for i, r in enumerate(compiled.rules)}
        by_priority = lambda rs: sorted(rs, key=lambda r: (-r.priority, order[r.id]))   # noqa: E731
        self.minimums = by_priority(r for r in rules if r.kind == "quota" or (r.kind == "margin_floor" and not r.average))
        self.averages = by_priority(r for r in rules if r.kind == "margin_floor" and r.average)
        self.pins = by_priority(r for r in rules if r.kind == "pin")
        self.pin_checks = {}   # what does not depend on the request: rule id -> (row, reason or None)
        for r in self.pins:
            row = self.table.row_of.get(r.sku, -1)
            reason = (f"{r.sku} is not in the catalog" if row < 0 else f"{r.sku} is out of stock"
                      if not self.table.in_stock[row] else None)
            if reason is None and self.block_mask is not None and self.block_mask[row]:
                by = next(b.id for b in blocks if static(b) and masks[b.id][row])
                reason = f"{r.sku} is blocked by {by}"
            self.pin_checks[r.id] = (row, reason)

    def with_inactive(self, inactive: dict[str, str]) -> Plan:
        plan = object.__new__(Plan)
        plan.__dict__.update(self.__dict__)
        plan.inactive = inactive
        return plan

    @property
    def version(self) -> str:
        return self.compiled.version

    # -- 1 and 2: blocks and boosts --------------------------------------------------------------------
    def blocked(self, rows: np.ndarray, facts: RequestFacts | None) -> np.ndarray:
        gone = self.block_mask[rows] if self.block_mask is not None else np.zeros(len(rows), dtype=bool)
        for rule in self.dynamic_blocks:
            gone = gone | evaluate(self.compiled.masks[rule.id], rows, facts)
        return gone

    def blocked_by(self, rows: np.ndarray, facts: RequestFacts | None) -> list[str | None]:
        """The first block (in rule order) that removes each row (explain)."""
        by: list[str | None] = [None] * len(rows)
        for rule in self.blocks:
            for i in np.flatnonzero(evaluate(self.compiled.masks[rule.id], rows, facts)):
                by[i] = by[i] or rule.id
        return by

    def factors(self, rows: np.ndarray, facts: RequestFacts | None) -> np.ndarray | None:
        """The relevance multiplier of each row, or None when no boost or bury applies here."""
        factor = self.factor[rows] if self.factor is not None else None
        for rule in self.dynamic_boosts:
            hit = evaluate(self.compiled.masks[rule.id], rows, facts)
            if hit.any():
                factor = np.ones(len(rows)) if factor is None else factor.copy()
                factor[hit] *= rule.factor
        return factor

    def boost_notes(self, rows: np.ndarray, facts: RequestFacts | None) -> dict[int, list[str]]:
        notes: dict[int, list[str]] = {}
        for rule in self.boosts:
            for i in np.flatnonzero(evaluate(self.compiled.masks[rule.id], rows, facts)):
                notes.setdefault(int(i), []).append(f"{rule.id}: relevance x{rule.factor:g}")
        return notes

    # -- 3 and 4: floors, caps, quotas, then pins ---------------------------------------------------------
    def arrange(self, pool: np.ndarray, k: int, facts: RequestFacts | None, fallback: np.ndarray,
                excluded: np.ndarray, out: Arranged) -> Arranged:
        """The k slots from `pool` (catalog rows after the blocks, in MMR order then by relevance),
        drawing on `fallback` (rows of the fallback pool) and the catalog when the pool cannot satisfy
        the rules. `excluded`: rows the request must not show."""
        mins = [(rule, min(rule.slots if rule.kind == "quota" else rule.at_least, k)) for rule in self.minimums]
        masks = [evaluate(self.compiled.masks[rule.id], pool, facts) for rule, _ in mins]
        wanting = {rule.id for (rule, need), mask in zip(mins, masks) if np.count_nonzero(mask) < need}
        extended = len(pool) < k or bool(wanting)
        if extended:   # the pool cannot do it: draw on the fallback pool and the catalog
            pool, masks = self._extend(pool, masks, k, facts, fallback, excluded, wanting)
        chosen = self._select(pool, k, list(zip(mins, masks)))
        if chosen.wanting and not extended:   # caps or an average floor the pool could not meet
            pool, masks = self._extend(pool, masks, k, facts, fallback, excluded, chosen.wanting)
            chosen = self._select(pool, k, list(zip(mins, masks)))
        out.unmet.update(chosen.unmet)
        skus = self.table.skus
        for i, note in chosen.notes.items():
            out.notes.setdefault(skus[pool[i]], []).append(note)
        protected = {skus[pool[i]] for i, note in chosen.notes.items() if not note.startswith("over a cap")}
        return self._pin([skus[pool[i]] for i in sorted(chosen.selected)], protected, k, facts, excluded, out)

    def _select(self, pool: np.ndarray, k: int, mins: list) -> _Chosen:
        """Quotas and count floors (by priority), then the fill in pool order, under the caps; then the
        average floors. `mins`: ((rule, slots needed), mask over the pool) in priority order."""
        n = len(pool)
        taken = [False] * n
        chosen = _Chosen()
        selected, notes = chosen.selected, chosen.notes
        keys = [codes[pool].tolist() for _, codes, _, _ in self.caps]
        counts = [[0] * size for _, _, _, size in self.caps]
        limits = [most for _, _, most, _ in self.caps]
        caps = list(zip(keys, counts, limits))

        def fits(i: int) -> bool:
            for key, count, most in caps:
                if count[key[i]] >= most:
                    return False
            return True

        def take(i: int) -> None:
            taken[i] = True
            selected.append(i)
            for key, count, _ in caps:
                count[key[i]] += 1

        for (rule, need), mask in mins:
            have = int(np.count_nonzero(mask[selected])) if selected else 0
            if have < need:
                for i in np.flatnonzero(mask).tolist():
                    if have >= need or len(selected) >= k:
                        break
                    if not taken[i] and fits(i):
                        take(i)
                        have += 1
                        notes[i] = f"{rule.id}: kept for its {rule.kind.replace('_', ' ')}"
            if have < need:
                chosen.unmet[rule.id] = f"{have} of {need} slots: not enough matching items"
                chosen.wanting.add(rule.id)
        i = 0
        while len(selected) < k and i < n:
            if not taken[i] and fits(i):
                take(i)
            i += 1
        if len(selected) < k:
            chosen.wanting.add("")            # the rail is short: more of the fallback pool
            if caps:                          # and, if still short, the rail's length wins over a cap
                for i in range(n):
                    if len(selected) >= k:
                        break
                    if not taken[i]:
                        take(i)
                        notes[i] = "over a cap: nothing else could fill the rail"
                        for rule in self.cap_rules:
                            chosen.unmet.setdefault(rule.id, "exceeded: too few other items to fill the rail")
        if self.averages and selected:
            self._raise_averages(pool, mins, taken, chosen, fits, caps)
        return chosen

    def _raise_averages(self, pool, mins, taken, chosen, fits, caps) -> None:
        """Swap the lowest-margin slot (one no quota or count floor needs) for the highest-margin item
        left that fits the caps, while the rail's mean margin is below the floor."""
        margins = self.table.margin[pool].tolist()
        selected, notes = chosen.selected, chosen.notes
        total = sum(margins[i] for i in selected)
        by_margin = None   # pool indices, highest margin first (ties: pool order), sorted once when needed
        for rule in self.averages:
            if total / len(selected) >= rule.margin:
                continue
            needed = set()   # slots a quota or count floor cannot spare
            picked = np.array(selected)
            for (_, need), mask in mins:
                members = picked[mask[picked]]
                if len(members) <= need:
                    needed.update(members.tolist())
            droppable = sorted((i for i in selected if i not in needed), key=lambda i: (margins[i], -i))
            if by_margin is None:
                by_margin = np.argsort(-self.table.margin[pool], kind="stable").tolist()
            options = by_margin
            j = 0
            for drop in droppable:
                if total / len(selected) >= rule.margin:
                    break
                for key, count, _ in caps:
                    count[key[drop]] -= 1
                while j < len(options) and (taken[options[j]] or not fits(options[j])):
                    j += 1
                if j == len(options) or margins[options[j]] <= margins[drop]:
                    for key, count, _ in caps:
                        count[key[drop]] += 1
                    break
                add = options[j]
                selected.remove(drop)
                taken[drop] = False
                notes.pop(drop, None)
                taken[add] = True
                selected.append(add)
                for key, count, _ in caps:
                    count[key[add]] += 1
                notes[add] = f"{rule.id}: brought in for the rail's average margin"
                total += margins[add] - margins[drop]
            if total / len(selected) < rule.margin:
                chosen.unmet[rule.id] = f"average margin {total / len(selected):.3f} < {rule.margin}: no better items"
                chosen.wanting.add(rule.id)

    def _extend(self, pool: np.ndarray, masks: list[np.ndarray], k: int, facts: RequestFacts | None,
                fallback: np.ndarray, excluded: np.ndarray, wanting: set[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        """The pool (and the minimums' masks over it), then (when the rail is short, or a cap or an average floor wants more) up to 4k of
        the fallback pool, then for each quota or count floor left wanting up to 4x its slots of matching
        catalog items (best sellers first; for a filter on the request's
        context, the context's accessories); never a blocked or excluded row, nor one twice."""
        seen = np.zeros(self.table.n + 1, dtype=bool)
        seen[pool] = True
        seen[excluded] = True

        def fresh(rows: np.ndarray, most: int) -> np.ndarray:
            rows = rows[~seen[rows]]
            if len(rows):
                rows = rows[~self.blocked(rows, facts)][:most]
                seen[rows] = True
            return rows

        short = len(pool) < k or "" in wanting or any(r.id in wanting for r in self.cap_rules + self.averages)
        parts = [pool, fresh(fallback, 4 * k) if short else pool[:0]]
        for rule in self.minimums:
            if rule.id not in wanting:
                continue
            need = min(rule.slots if rule.kind == "quota" else rule.at_least, k)
            draw = self.compiled.draws.get(rule.id)
            if draw is None:   # a filter on the request's context: the context's accessories
                if facts is None or facts.accessory_rows is None:
                    continue
                rows = facts.accessory_rows[facts.accessory_rows >= 0]
                draw = rows[evaluate(self.compiled.masks[rule.id], rows, facts) & self.table.in_stock[rows]]
            parts.append(fresh(draw, min(CATALOG_DRAW, 4 * need)))   # room for what the caps turn away
        extra = np.concatenate(parts[1:])
        masks = [np.concatenate([mask, evaluate(self.compiled.masks[rule.id], extra, facts)])
                 for rule, mask in zip(self.minimums, masks)]
        return np.concatenate([pool, extra]), masks

    def _pin(self, skus: list[str], protected: set[str], k: int, facts: RequestFacts | None,
             excluded: np.ndarray, out: Arranged) -> Arranged:
        if not self.pins:
            out.skus = skus
            return out
        winners: dict[int, str] = {}
        by_sku: dict[str, str] = {}
        excluded_set = set(excluded.tolist())
        dynamic = {}   # pin row -> blocked by a block on the request's context
        if self.dynamic_blocks:
            rows = np.array([self.pin_checks[r.id][0] for r in self.pins])
            dynamic = dict(zip(rows.tolist(), self.blocked(rows, facts).tolist()))
        for rule in self.pins:
            out.pins[rule.id] = rule.slot
            row, reason = self.pin_checks[rule.id]
            if rule.slot > k:
                reason = f"slot {rule.slot} is beyond the rail's {k}"
            elif rule.slot in winners:
                reason = f"slot {rule.slot} is taken by a pin of higher priority"
            elif rule.sku in by_sku:
                reason = f"{rule.sku} is pinned by {by_sku[rule.sku]}"
            elif reason is not None:
                pass
            elif row in excluded_set:
                reason = f"{rule.sku} is excluded here (in the cart, bought, or the page's own)"
            elif dynamic.get(row):
                reason = f"{rule.sku} is blocked by {self.blocked_by(np.array([row]), facts)[0]}"
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
        over = len(others) + len(winners) - k       # the pins displace the last items, sparing protected ones
        for spare in (True, False):
            for i in range(len(others) - 1, -1, -1):
                if over <= 0:
                    break
                if not (spare and others[i] in protected):
                    del others[i]
                    over -= 1
        rest = iter(others)
        final = []
        for slot in range(1, k + 1):
            sku = winners.get(slot) or next(rest, None)
            if sku is None:
                break
            final.append(sku)
        final += [winners[s] for s in sorted(winners) if winners[s] not in final]   # pins past a short rail
        for sku, rule_id in by_sku.items():
            out.notes.setdefault(sku, []).append(f"{rule_id}: pinned at slot {out.pinned[rule_id]}")
        out.skus = final
        return out


@dataclass
class _Chosen:
    selected: list[int] = field(default_factory=list)         # pool indices
    notes: dict[int, str] = field(default_factory=dict)       # pool index -> what put it there
    unmet: dict[str, str] = field(default_factory=dict)
    wanting: set[str] = field(default_factory=set)            # rules (or "" for the rail's length) the pool fell short of
