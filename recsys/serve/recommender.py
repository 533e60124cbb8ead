"""The recommendation pipeline for one request: features -> candidate sources -> blend -> filter -> slots.

A plain class, testable without Ray; the Serve deployment wraps it. Every dependency call is
guarded: a failure is listed in `degraded` and the slots are filled from what still works.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from omegaconf import OmegaConf

from recsys.features.online_store import UserState
from recsys.serve.request import Candidate, RecRequest
from recsys.serve.resources import Resources
from recsys.serve.sources import SOURCES

log = logging.getLogger(__name__)


class UnknownSurface(KeyError):
    pass


class Recommender:
    def __init__(self, cfg, resources: Resources | None = None):
        self.cfg = cfg
        self.res = resources or Resources(cfg)
        self.sources = {name: cls(self.res) for name, cls in SOURCES.items()}
        self.surfaces = OmegaConf.to_container(cfg.surfaces, resolve=True)  # plain dicts: hot path

    def recommend(self, req: RecRequest) -> dict:
        if req.surface not in self.surfaces:
            raise UnknownSurface(req.surface)
        surface = self.surfaces[req.surface]
        k = max(1, min(int(req.k), 50))
        degraded: list[str] = []
        started = time.perf_counter()

        user = UserState(user_id=req.user_id or "")
        if req.user_id:
            try:
                user = self.res.store.user_state(req.user_id)
            except Exception as exc:
                degraded.append(f"features: {type(exc).__name__}")
        try:
            self.res.refresh()
        except Exception as exc:  # pragma: no cover - refresh already guards itself
            degraded.append(f"catalog: {type(exc).__name__}")

        excluded = self._excluded(req, user, surface)
        per_source: dict[str, list[Candidate]] = {}
        for name, quota in surface["sources"].items():
            try:
                per_source[name] = self.sources[name].fetch(req, user, int(quota))
            except Exception as exc:
                degraded.append(f"{name}: {type(exc).__name__}")
                log.debug("source %s failed", name, exc_info=True)

        items = self._blend(per_source, surface["sources"], excluded, k, req.explain)
        if len(items) < k:  # cold start or dead sources: fill from the fallback, then the catalog
            items += self._fill(items, excluded, k - len(items), surface["fallback"])

        content = self.res.content[0] if self.res.content else None
        response = {
            "request_id": req.request_id,
            "surface": req.surface,
            "model_version": content or "none",
            "rule_set_version": None,
            "items": items,
            "degraded": degraded,
        }
        if req.explain:
            response["timing_ms"] = round((time.perf_counter() - started) * 1000, 2)
            response["user_known"] = user.known
        self._log_impression(req, response)
        return response

    def _excluded(self, req: RecRequest, user: UserState, surface) -> set[str]:
        excluded: set[str] = set()
        if surface.get("exclude_context_sku"):
            excluded.update(req.skus)
        if surface.get("exclude_cart"):
            excluded.update(req.cart)
            excluded.update(user.cart)
        if surface.get("exclude_purchased"):
            excluded.update(user.purchased)
        return excluded

    def _in_stock(self, sku: str) -> bool:
        catalog = self.res.catalog
        return catalog is None or sku in catalog.in_stock

    def _blend(self, per_source, quotas, excluded, k, explain) -> list[dict]:
        """Rank-based blend: a source's weight is its quota share; within it, earlier ranks count more."""
        total = sum(int(q) for q in quotas.values()) or 1
        score: dict[str, float] = defaultdict(float)
        parts: dict[str, dict[str, float]] = defaultdict(dict)
        reasons: dict[str, list[str]] = defaultdict(list)
        for name, candidates in per_source.items():
            quota = int(quotas[name])
            for rank, c in enumerate(candidates[:quota]):
                if c.sku in excluded or not self._in_stock(c.sku):
                    continue
                contribution = (quota / total) * (1.0 - rank / quota)
                score[c.sku] += contribution
                parts[c.sku][name] = round(contribution, 4)
                reasons[c.sku].extend(r for r in c.reasons if r and r not in reasons[c.sku])
        ranked = sorted(score, key=score.get, reverse=True)[:k]
        items = []
        for sku in ranked:
            item = {"sku": sku, "score": round(score[sku], 4), "source": max(parts[sku], key=parts[sku].get),
                    "reasons": reasons[sku]}
            if explain:
                item["explain"] = {"contributions": parts[sku]}
            items.append(item)
        return items

    def _fill(self, items: list[dict], excluded: set[str], n: int, fallback: str) -> list[dict]:
        taken = {i["sku"] for i in items} | excluded
        pool = [sku for sku, _ in self.res.bestsellers]
        if self.res.catalog is not None:
            pool += list(self.res.catalog.items.index[:500])
        out = []
        for sku in pool:
            if len(out) == n:
                break
            if sku not in taken and self._in_stock(sku):
                taken.add(sku)
                out.append({"sku": sku, "score": 0.0, "source": fallback, "reasons": ["fallback"]})
        return out

    def _log_impression(self, req: RecRequest, response: dict) -> None:
        try:
            self.res.event_producer().send_impression({
                "request_id": req.request_id, "ts": time.time(), "surface": req.surface, "user_id": req.user_id,
                "session_id": req.session_id, "context_skus": req.context_skus,
                "skus": [i["sku"] for i in response["items"]], "sources": [i["source"] for i in response["items"]],
                "model_version": response["model_version"], "rule_set_version": response["rule_set_version"],
                "arm": None, "degraded": response["degraded"],
            })
        except Exception as exc:
            response["degraded"].append(f"impressions: {type(exc).__name__}")
