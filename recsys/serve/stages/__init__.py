"""The serving pipeline's stages, in order: features -> retrieval -> ranker -> slots (rules and diversity).

Each is a plain class built from (cfg, resources), testable without Ray. The recommender composes
them in one process (`serve.topology: fused`) or calls each in a deployment of its own (`split`).
"""

from __future__ import annotations

from recsys.serve.resources import Resources
from recsys.serve.stages.features import Features
from recsys.serve.stages.ranker import RANKERS
from recsys.serve.stages.retrieval import Retrieval
from recsys.serve.stages.slots import Slots

STAGES = ("features", "retrieval", "ranker", "slots")


def build_stage(name: str, cfg, res: Resources):
    if name == "ranker":
        return RANKERS[cfg.serve.ranker](cfg, res)
    return {"features": Features, "retrieval": Retrieval, "slots": Slots}[name](cfg, res)
