"""Stage 2, retrieval: candidates from each source the surface names, up to its quota, pooled.

The sources run one after the other in the request's thread: each reads in-memory snapshots (the
vector sets, the ALS factors, the catalog's accessory graph, trending and bestsellers), so a thread per
source would cost more than it saves. A source that fails, or answers past its budget, is left out and
named in `degraded`, and is then benched for `serve.source_cooldown_s`: a dependency that hangs until
its own timeout costs one request that time, not every request. Sources not yet started when the
stage's budget is spent are skipped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from omegaconf import OmegaConf

from recsys.features.online_store import UserState
from recsys.serve.request import Candidate, Pooled, RecRequest
from recsys.serve.resources import Resources
from recsys.serve.sources import SOURCES


@dataclass
class Retrieved:
    candidates: list[Pooled]
    degraded: list[str] = field(default_factory=list)


def excluded_skus(req: RecRequest, user: UserState, surface: dict, catalog=None) -> set[str]:
    """What a surface must never show: the page's SKU, the cart, what the user bought (per its config),
    each with the other variants of a device among them (the same phone in another colour is not an
    upsell for the phone in the cart)."""
    excluded: set[str] = set()
    if surface.get("exclude_context_sku"):
        excluded.update(req.skus)
    if surface.get("exclude_cart"):
        excluded.update(req.cart)
        excluded.update(user.cart)
    if surface.get("exclude_purchased"):
        excluded.update(user.purchased)
    return catalog.with_variants(excluded) if catalog is not None else excluded


class Retrieval:
    def __init__(self, cfg, res: Resources):
        self.res = res
        self.sources = {name: cls(res) for name, cls in SOURCES.items()}
        self.surfaces = OmegaConf.to_container(cfg.surfaces, resolve=True)
        self.budget_s = float(cfg.serve.budgets_ms.retrieval) / 1000
        self.budgets_s = {name: ms / 1000 for name, ms in cfg.serve.budgets_ms.sources.items()}
        self.cooldown_s = float(cfg.serve.source_cooldown_s)
        self.benched_until: dict[str, float] = {}

    def candidates(self, req: RecRequest, user: UserState) -> Retrieved:
        self.res.refresh()
        surface = self.surfaces[req.surface]
        quotas = {name: int(q) for name, q in surface["sources"].items()}
        started = time.perf_counter()
        per_source: dict[str, list[Candidate]] = {}
        degraded: list[str] = []
        for name, quota in quotas.items():
            start = time.perf_counter()
            if start - started > self.budget_s:
                degraded.append(f"{name}: skipped, retrieval over its {self.budget_s * 1000:.0f} ms budget")
                continue
            if self.benched_until.get(name, 0.0) > start:
                degraded.append(f"{name}: benched after a failure")
                continue
            budget = self.budgets_s.get(name, self.budgets_s["default"])
            try:
                found = self.sources[name].fetch(req, user, quota)
            except Exception as exc:
                degraded.append(f"{name}: {type(exc).__name__}")
                self.benched_until[name] = time.perf_counter() + self.cooldown_s
                continue
            if time.perf_counter() - start > budget:
                degraded.append(f"{name}: over its {budget * 1000:.0f} ms budget")
                self.benched_until[name] = time.perf_counter() + self.cooldown_s
                continue
            per_source[name] = found
        return Retrieved(self._pool(per_source, quotas, excluded_skus(req, user, surface, self.res.catalog)), degraded)

    def _pool(self, per_source: dict[str, list[Candidate]], quotas: dict[str, int], excluded: set[str]) -> list[Pooled]:
        """One entry per SKU, in source order; excluded and out-of-stock SKUs never enter."""
        catalog = self.res.catalog
        pooled: dict[str, Pooled] = {}
        best_left: dict[str, int] = {}  # how far inside its quota the SKU's best rank is
        for name, candidates in per_source.items():
            quota = quotas[name]
            for rank, c in enumerate(candidates[:quota]):
                if c.sku in excluded or (catalog is not None and c.sku not in catalog.in_stock):
                    continue
                p = pooled.get(c.sku)
                if p is None:
                    p = pooled[c.sku] = Pooled(c.sku, name)
                    best_left[c.sku] = -1
                p.ranks[name], p.scores[name] = rank, c.score
                p.reasons.extend(r for r in c.reasons if r and r not in p.reasons)
                if quota - rank > best_left[c.sku]:
                    p.source, best_left[c.sku] = name, quota - rank
        return list(pooled.values())
