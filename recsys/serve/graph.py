"""The serving graph, declared once: features -> retrieval -> ranker -> slots.

Each stage names the class that does its work, the method the recommender calls (the function
itself, so a reader can jump to it, never a method-name string), and its fallback: what the response
uses instead when the stage fails or runs past its budget (`serve.budgets_ms.<stage>`).

`fused` (recsys/serve/recommender.py) calls each method in the request's own thread, one after the
other; `split` (recsys/serve/app.py) binds one deployment per stage from this same list and calls the
same method through a DeploymentHandle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from recsys.features.online_store import UserState
from recsys.serve.request import RecRequest
from recsys.serve.stages.features import Features, Known
from recsys.serve.stages.ranker import RANKERS, Ranker, RankBlend
from recsys.serve.stages.retrieval import Retrieval, Retrieved
from recsys.serve.stages.slots import Slate, Slots

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Stage:
    name: str
    build: Callable[[Any, Any], Any]                      # (cfg, resources) -> the object doing the work
    method: Callable[..., Any]                            # its entry point, called on that object
    fallback: Callable[[Any, Any], Callable[..., Any]]    # (cfg, resources) -> what stands in for `method`

    def bind(self, obj) -> Callable[..., Any]:
        """`method` on `obj`, looked up by the method's own name, so a subclass or any implementation
        of a protocol (the rankers) answers."""
        return getattr(obj, self.method.__name__)


def _anonymous(cfg, res) -> Callable[[RecRequest], Known]:
    return lambda req: Known(user=UserState(user_id=req.user_id or ""))


def _nothing_retrieved(cfg, res) -> Callable[..., Retrieved]:
    return lambda req, user: Retrieved([])


def _blend(cfg, res) -> Callable[..., list]:
    return RankBlend(cfg).score


def _top_k(cfg, res) -> Callable[..., list]:
    plain = Slots(cfg, res).plain

    def top_k(req, user, candidates, scores) -> Slate:
        try:
            return plain(req, user, candidates, scores)
        except Exception:   # the last resort must not fail the response: an empty rail
            log.warning("the slots fallback failed", exc_info=True)
            return Slate([])
    return top_k


def build_ranker(cfg, res) -> Ranker:
    return RANKERS[cfg.serve.ranker](cfg, res)


FEATURES = Stage("features", Features, Features.lookup, _anonymous)        # cached rail, user state, vector
RETRIEVAL = Stage("retrieval", Retrieval, Retrieval.candidates, _nothing_retrieved)  # slots fill from bestsellers
RANKER = Stage("ranker", build_ranker, Ranker.score, _blend)               # the blend needs no model
SLOTS = Stage("slots", Slots, Slots.select, _top_k)   # the ranker's top k: no diversity or pins, still no blocked item

GRAPH = (FEATURES, RETRIEVAL, RANKER, SLOTS)
