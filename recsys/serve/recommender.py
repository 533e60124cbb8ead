"""The recommendation pipeline for one request: response cache -> features -> retrieval -> ranker ->
slots -> impression.

The stages are plain classes (recsys/serve/stages/). In topology `fused` the recommender calls them
in this process; in `split` the same composition calls each stage's own deployment (recsys/serve/app.py
passes those callers in). Every stage call has a time budget and is guarded: a failure or an overrun
is listed in `degraded` and the response is built from what still works (the blend ranker, the top k
without diversity, the bestsellers). A dependency failure never becomes an error response.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

from omegaconf import OmegaConf

from recsys.features.online_store import UserState
from recsys.serve.cache import ResponseCache
from recsys.serve.request import RecRequest
from recsys.serve.resources import Resources
from recsys.serve.stages import STAGES, build_stage
from recsys.serve.stages.ranker import RankBlend
from recsys.serve.stages.slots import Slots

log = logging.getLogger(__name__)

METHODS = {"features": "user_state", "retrieval": "candidates", "ranker": "score", "slots": "select"}


class UnknownSurface(KeyError):
    pass


class OverBudget(Exception):
    """A stage did not answer within its time budget."""


class LocalStage:
    """Calls a stage object in this process, on a thread, so that its budget holds (topology fused)."""

    def __init__(self, stage, threads: ThreadPoolExecutor):
        self.stage = stage
        self.threads = threads

    def call(self, method: str, budget_s: float, *args):
        future = self.threads.submit(getattr(self.stage, method), *args)
        try:
            return future.result(timeout=budget_s)
        except TimeoutError:
            if future.done():
                raise
            future.cancel()
            raise OverBudget from None


class Recommender:
    def __init__(self, cfg, resources: Resources | None = None, stages: dict | None = None):
        self.cfg = cfg
        self.res = resources or Resources(cfg)
        self.surfaces = OmegaConf.to_container(cfg.surfaces, resolve=True)  # plain dicts: hot path
        self.budgets_s = {name: float(cfg.serve.budgets_ms[name]) / 1000 for name in STAGES}
        self.cache = ResponseCache(self.res.store, self.surfaces)
        if stages is None:
            threads = ThreadPoolExecutor(int(cfg.serve.max_ongoing_requests), thread_name_prefix="stage")
            stages = {name: LocalStage(build_stage(name, cfg, self.res), threads) for name in STAGES}
        self.stages = stages
        self.fallback_ranker = RankBlend(cfg)
        self.fallback_slots = Slots(cfg, self.res)

    def recommend(self, req: RecRequest) -> dict:
        if req.surface not in self.surfaces:
            raise UnknownSurface(req.surface)
        started = time.perf_counter()
        degraded: list[str] = []
        version = None
        if self.cache.enabled(req):
            try:
                cached, version = self.cache.get(req)
            except Exception as exc:
                degraded.append(f"cache: {type(exc).__name__}")
            else:
                if cached is not None:  # a fresh request id: each response is an impression of its own
                    response = {"request_id": req.request_id, **cached}
                    self._log_impression(req, response)
                    return response
        self.res.refresh()

        timings: dict[str, float] = {}
        user = self._call("features", degraded, timings, req) or UserState(user_id=req.user_id or "")
        retrieved = self._call("retrieval", degraded, timings, req, user)
        candidates = retrieved.candidates if retrieved else []
        degraded += retrieved.degraded if retrieved else []
        scores = self._call("ranker", degraded, timings, req, user, candidates)
        if scores is None:
            scores = self.fallback_ranker.score(req, user, candidates)
        items = self._call("slots", degraded, timings, req, user, candidates, scores)
        if items is None:
            try:
                items = self.fallback_slots.plain(req, user, candidates, scores)
            except Exception as exc:
                degraded.append(f"fallback: {type(exc).__name__}")
                items = []

        content = self.res.content[0] if self.res.content else None
        response = {
            "request_id": req.request_id,
            "surface": req.surface,
            "model_version": content or "none",
            "rule_set_version": None,
            "items": items,
            "degraded": degraded,
        }
        if version is not None and not degraded:
            try:
                self.cache.put(req, version, response)
            except Exception as exc:
                degraded.append(f"cache: {type(exc).__name__}")
        if req.explain:
            response["timing_ms"] = round((time.perf_counter() - started) * 1000, 2)
            response["stage_ms"] = timings
            response["user_known"] = user.known
        self._log_impression(req, response)
        return response

    def _call(self, name: str, degraded: list[str], timings: dict[str, float], *args):
        """One stage within its budget; None (and a line in `degraded`) when it fails or overruns."""
        start = time.perf_counter()
        try:
            return self.stages[name].call(METHODS[name], self.budgets_s[name], *args)
        except OverBudget:
            degraded.append(f"{name}: over its {self.budgets_s[name] * 1000:.0f} ms budget")
        except Exception as exc:
            degraded.append(f"{name}: {type(exc).__name__}")
            log.debug("stage %s failed", name, exc_info=True)
        finally:
            timings[name] = round((time.perf_counter() - start) * 1000, 2)
        return None

    def _log_impression(self, req: RecRequest, response: dict) -> None:
        try:
            self.res.impression_producer().send_impression({
                "request_id": req.request_id, "ts": time.time(), "surface": req.surface, "user_id": req.user_id,
                "session_id": req.session_id, "context_skus": req.context_skus,
                "skus": [i["sku"] for i in response["items"]], "sources": [i["source"] for i in response["items"]],
                "model_version": response["model_version"], "rule_set_version": response["rule_set_version"],
                "arm": None, "degraded": response["degraded"],
            })
        except Exception as exc:
            response["degraded"].append(f"impressions: {type(exc).__name__}")
