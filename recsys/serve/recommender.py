"""The recommendation pipeline for one request: features (the cached rail, the user's state) ->
retrieval -> ranker -> slots -> the impression, as declared in recsys/serve/graph.py.

In topology `fused` every stage runs in the request's own thread, one after the other: no thread hop,
no future per stage. A stage is held to its budget after the fact (a stage that ran past it is
replaced by its fallback, as a late answer from a remote stage would be) and the request to a
deadline (`serve.deadline_ms`): once it has passed, the remaining stages are not started and their
fallbacks answer. A stuck dependency is bounded by its own timeout (Redis, Postgres). In `split` the
same sequence calls each stage's deployment (recsys/serve/app.py passes those callers in) and an
overrun is cancelled. A failure or an overrun is listed in `degraded`; it never becomes an error.
The cache entry, a recomputed user vector and the impression are written behind the response.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from omegaconf import OmegaConf

from recsys.rules.shadow import ShadowRunner
from recsys.serve.cache import ResponseCache
from recsys.serve.graph import FEATURES, GRAPH, RANKER, RETRIEVAL, SLOTS, Stage
from recsys.serve.request import RecRequest
from recsys.serve.resources import Resources

log = logging.getLogger(__name__)


class UnknownSurface(KeyError):
    pass


class OverBudget(Exception):
    """A stage did not answer within its time budget."""


class Recommender:
    def __init__(self, cfg, resources: Resources | None = None, stages: dict[str, Callable] | None = None):
        """`stages`: stage name -> a callable standing for the stage's method (topology split); by
        default each stage is built here and called in-process."""
        self.cfg = cfg
        self.res = resources or Resources(cfg)
        self.surfaces = OmegaConf.to_container(cfg.surfaces, resolve=True)  # plain dicts: hot path
        self.max_context_skus = int(cfg.serve.max_context_skus)       # the API's limits, read once: an
        self.max_body_bytes = int(cfg.serve.max_body_bytes)           # OmegaConf lookup per request costs
        lag_ms = float(cfg.serve.admission_max_lag_ms)              # recsys/serve/admission.py
        self.admission = (lag_ms / 1000, int(cfg.serve.retry_after_s)) if lag_ms > 0 else None
        self.budgets_s = {stage.name: float(cfg.serve.budgets_ms[stage.name]) / 1000 for stage in GRAPH}
        self.deadline_s = float(cfg.serve.deadline_ms) / 1000
        self.cache = ResponseCache(self.res.store, self.surfaces)
        self.stages = {} if stages else {stage.name: stage.build(cfg, self.res) for stage in GRAPH}
        self.calls = stages or {stage.name: stage.bind(self.stages[stage.name]) for stage in GRAPH}
        self.remote = bool(stages)   # split: each stage call waits on another deployment
        self.fallbacks = {stage.name: stage.fallback(cfg, self.res) for stage in GRAPH}
        # the shadow rule set runs on a sample of requests on a thread of its own, after the response
        self.shadow = ShadowRunner(cfg, self.res, lambda: self.stages.get(SLOTS.name) or SLOTS.build(cfg, self.res))

    def recommend(self, req: RecRequest) -> dict:
        if req.surface not in self.surfaces:
            raise UnknownSurface(req.surface)
        started = time.perf_counter()
        degraded: list[str] = []
        timings: dict[str, float] = {}
        deadline = started + self.deadline_s
        req.arm = self.res.release.arm_for(req.user_id, req.session_id, req.request_id)
        known = self._run(FEATURES, deadline, degraded, timings, req)
        if known.cached is not None:   # a fresh request id: each response is an impression of its own
            response = {"request_id": req.request_id, **known.cached}
            self._log_impression(req, response, started)
            return response
        self.res.refresh()
        user = known.user
        retrieved = self._run(RETRIEVAL, deadline, degraded, timings, req, user)
        degraded += retrieved.degraded
        candidates = retrieved.candidates
        scores = self._run(RANKER, deadline, degraded, timings, req, user, candidates)
        slate = self._run(SLOTS, deadline, degraded, timings, req, user, candidates, scores)

        response = {
            "request_id": req.request_id,
            "surface": req.surface,
            **self.served_by(req),
            "rule_set_version": slate.rule_set_version,
            "items": slate.items,
            "degraded": degraded,
        }
        if slate.rules is not None:
            response["rules"] = slate.rules
        self.shadow.offer(req, user, candidates, scores, response, timings.get(SLOTS.name, 0.0))
        # cached only under the rule set the key was made for (a replica may have just switched sets)
        if known.cache_version is not None and not degraded and slate.rule_set_version == known.rules_version:
            key, value, ttl_ms = self.cache.entry(req, known.cache_version, response)
            self.res.writes.redis(lambda pipe: pipe.set(key, value, px=ttl_ms))
        if req.explain:
            response["timing_ms"] = round((time.perf_counter() - started) * 1000, 2)
            response["stage_ms"] = timings
            response["user_known"] = user.known
        self._log_impression(req, response, started)
        return response

    def served_by(self, req: RecRequest) -> dict:
        """`model_version` (every version that served the rail, in one string), `models` (kind ->
        version, the content vectors' set included) and `arm` (live, control or canary)."""
        models = dict(req.arm.models)
        if self.res.content:
            models["content"] = self.res.content[0]
        return {"model_version": "+".join(models[k] for k in sorted(models)) or "none", "models": models,
                "arm": req.arm.name}

    def preview(self, req: RecRequest, rule_sets: dict) -> dict:
        """The rail under each of `rule_sets` (name -> compiled set or None) from the same candidates:
        features (never the cache), retrieval and the ranker run once; nothing is cached or logged."""
        req.explain = True
        req.arm = self.res.release.arm_for(req.user_id, req.session_id, req.request_id)
        degraded: list[str] = []
        timings: dict[str, float] = {}
        deadline = time.perf_counter() + self.deadline_s
        user = self._run(FEATURES, deadline, degraded, timings, req).user
        self.res.refresh()
        retrieved = self._run(RETRIEVAL, deadline, degraded, timings, req, user)
        degraded += retrieved.degraded
        scores = self._run(RANKER, deadline, degraded, timings, req, user, retrieved.candidates)
        slots = self.stages.get(SLOTS.name) or self.shadow.slots_of()
        ranked = slots.ranked(retrieved.candidates, scores)
        rails = {}
        for name, rules in rule_sets.items():
            slate = slots.arrange(req, user, ranked, rules)
            rails[name] = {"rule_set_version": slate.rule_set_version, "items": slate.items, "rules": slate.rules}
        return {"request_id": req.request_id, "surface": req.surface, "degraded": degraded, **rails}

    def _run(self, stage: Stage, deadline: float, degraded: list[str], timings: dict[str, float], *args):
        """The stage's answer, or its fallback's (and a line in `degraded`) when it fails, overruns its
        budget, or the request's deadline has passed before it starts."""
        name, start = stage.name, time.perf_counter()
        try:
            if start > deadline:
                degraded.append(f"{name}: skipped, past the request's {self.deadline_s * 1000:.0f} ms deadline")
            else:
                answer = self.calls[name](*args)
                if time.perf_counter() - start <= self.budgets_s[name]:
                    return answer
                raise OverBudget
        except OverBudget:
            degraded.append(f"{name}: over its {self.budgets_s[name] * 1000:.0f} ms budget")
        except Exception as exc:
            degraded.append(f"{name}: {type(exc).__name__}")
            log.debug("stage %s failed", name, exc_info=True)
        finally:
            timings[name] = round((time.perf_counter() - start) * 1000, 2)
        return self.fallbacks[name](*args)

    def _log_impression(self, req: RecRequest, response: dict, started: float) -> None:
        self.res.writes.impression({
            "request_id": req.request_id, "ts": req.ts or time.time(), "surface": req.surface, "user_id": req.user_id,
            "session_id": req.session_id, "context_skus": req.context_skus,
            "skus": [i["sku"] for i in response["items"]], "sources": [i["source"] for i in response["items"]],
            "model_version": response["model_version"], "rule_set_version": response["rule_set_version"],
            "arm": response["arm"], "canary_id": req.arm.canary_id if req.arm else None,
            "degraded": list(response["degraded"]), "latency_ms": (time.perf_counter() - started) * 1000,
        })
