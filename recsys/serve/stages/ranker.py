"""Stage 3, ranking: one score per pooled candidate, and what it was made of.

Any ranker has `score(request, user, candidates) -> [Score]`; `serve.ranker` names the one a replica
uses. The blend needs no model and is also the fallback when a model ranker fails.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from recsys.features.online_store import UserState
from recsys.serve.request import Pooled, RecRequest, Score
from recsys.serve.resources import Resources

log = logging.getLogger(__name__)


class Ranker(Protocol):
    def score(self, req: RecRequest, user: UserState, candidates: list[Pooled]) -> list[Score]: ...


class RankBlend:
    """A source's weight is its share of the surface's quotas; within a source, earlier ranks count
    more. A SKU proposed by several sources collects each contribution."""

    name = "blend"

    def __init__(self, cfg, res: Resources | None = None):
        self.quotas = {name: {s: int(q) for s, q in surface.sources.items()} for name, surface in cfg.surfaces.items()}

    def score(self, req: RecRequest, user: UserState, candidates: list[Pooled]) -> list[Score]:
        quotas = self.quotas[req.surface]
        total = sum(quotas.values()) or 1
        scores = []
        for c in candidates:
            parts = {s: (quotas[s] / total) * (1.0 - rank / quotas[s]) for s, rank in c.ranks.items()}
            scores.append(Score(sum(parts.values()), parts))
        return scores


class LTRRanking:
    """The arm's learning-to-rank model (registry kind "ranker", the live one outside a canary) over the
    28 features of recsys.rank; the blend until a ranker has been trained. Contributions are LightGBM's per-feature SHAP values."""

    name = "ltr"
    top_contributions = 3

    def __init__(self, cfg, res: Resources):
        from recsys.rank.features import NAMES, ItemTable
        from recsys.rank.online import OnlineFeatures

        self.res, self.blend, self.names, self.features = res, RankBlend(cfg), NAMES, None
        try:
            with res.pool.connection(timeout=2) as conn:
                self.features = OnlineFeatures(res.item_counters, ItemTable.from_postgres(conn))
        except Exception as exc:
            log.warning("no ranking features (%s): ranking with the blend", exc)

    def score(self, req: RecRequest, user: UserState, candidates: list[Pooled]) -> list[Score]:
        model = self.res.models_of(req).ranker   # the request's arm's ranker (recsys/release/arms.py)
        if model is None or self.features is None or not candidates:
            return self.blend.score(req, user, candidates)
        X = self.features.matrix(req, user, candidates)
        values = model.score(X)
        if not req.explain:  # SHAP values cost more than the prediction: only when asked
            return [Score(float(v)) for v in values]
        scores = []
        for value, row in zip(values, model.contributions(X)):
            top = np.argsort(-np.abs(row[: len(self.names)]))[: self.top_contributions]
            scores.append(Score(float(value), {self.names[j]: round(float(row[j]), 4) for j in top}))
        return scores


RANKERS = {cls.name: cls for cls in (RankBlend, LTRRanking)}
