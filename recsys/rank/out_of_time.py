"""The two-tower's and ALS's scores in the ranker's training lists, from models fitted before the lists.

Serving hands the ranker both models' scores for every candidate. Lists scored by models fitted on the
whole log would leak (the model has seen the label), and lists without them teach the ranker nothing
about its strongest features. The training pipeline fits both on the events before its holdout cutoff
and registers that instant as the metric `trained_until` (epoch seconds); requests after it can be
scored as serving scores them: the ONNX user tower over the views before the request, ALS's stored
user factors or its fold-in of those views and the page. So the lists come from that window only, the
last `valid_days` of it validating.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg

from recsys import registry
from recsys.catalog import vectors
from recsys.features.online_store import UserState
from recsys.models.als import ALSFactors
from recsys.models.two_tower import OnnxUserTower
from recsys.rank.features import ItemTable
from recsys.rank.offline import Scorer


@dataclass
class OutOfTimeScores:
    scorers: dict[str, Scorer]     # source name -> scorer, as OfflineRetrieval takes them
    since: float                   # epoch seconds: the latest training data of any of them
    versions: dict[str, str]       # source name -> model version


def _aligned(skus: list[str], items: ItemTable) -> tuple[np.ndarray, np.ndarray]:
    """Positions in `items` of the model's SKUs it shares with the catalog, and their model rows."""
    pairs = [(items.index[s], i) for i, s in enumerate(skus) if s in items.index]
    cols, rows = (np.array(x, dtype=np.int64) for x in zip(*pairs)) if pairs else (np.zeros(0, int),) * 2
    return cols, rows


def _spread(scores: np.ndarray, cols: np.ndarray, n_items: int) -> np.ndarray:
    out = np.full(n_items, -np.inf)
    out[cols] = scores
    return out


def two_tower_scorer(conn: psycopg.Connection, version: str, items: ItemTable) -> Scorer:
    """The serving path's two-tower source: the ONNX user tower over the user's views, dot products with
    the version's item vectors (exact, where serving searches its index: recall 0.99+ of exact)."""
    record = registry.get(conn, version)
    skus, matrix = vectors.read_vectors(conn, version)
    matrix = np.asarray(matrix, dtype=np.float32)
    tower = OnnxUserTower(Path(record.artifact_uri), (version, matrix.shape[1]), skus, matrix)
    cols, rows = _aligned(skus, items)
    sub = matrix[rows]

    def score(user: UserState, context: list[str], t: float) -> np.ndarray | None:
        vec = tower.user_vector(user.views, t) if user.views else None
        return None if vec is None else _spread(sub @ vec, cols, len(items.skus))

    return score


def als_scorer(conn: psycopg.Connection, version: str, items: ItemTable) -> Scorer:
    """The serving path's ALS source: a known user's factors, anyone else folded in from the views and
    the page (recsys/serve/model_sources.py ALSSource)."""
    als = ALSFactors(Path(registry.get(conn, version).artifact_uri))
    cols, rows = _aligned(als.skus, items)
    sub = als.items[rows]

    def score(user: UserState, context: list[str], t: float) -> np.ndarray | None:
        if user.user_id in als.users:
            vec = als.user_vector(user.user_id, [])
        else:
            seen = [s for s, _ in user.views] + list(context)
            vec = als.user_vector(user.user_id, [als.index[s] for s in seen if s in als.index])
        return None if vec is None else _spread(sub @ vec, cols, len(items.skus))

    return score


def trained_until(record: registry.ModelRecord | None) -> float | None:
    value = (record.metrics or {}).get("trained_until") if record else None
    return float(value) if isinstance(value, (int, float)) else None


def _pick(conn: psycopg.Connection, kind: str, version: str | None) -> registry.ModelRecord | None:
    """The named version or the live one; an incremental ALS (new users folded into a base, fitted up
    to the moment it ran) stands for its base, whose training data ends where the base's holdout began."""
    record = registry.get(conn, version) if version else registry.live(conn, kind)
    while record is not None and trained_until(record) is None and (record.metrics or {}).get("base"):
        record = registry.get(conn, record.metrics["base"])
    return record


def from_registry(conn: psycopg.Connection, oot_cfg, items: ItemTable) -> tuple[OutOfTimeScores | None, str]:
    """The scorers of the two-tower and ALS versions `oot_cfg` names (null: the live ones), with why when
    there are none: a model that does not record `trained_until` may have seen every list's future."""
    if not oot_cfg.enabled:
        return None, "ranker.out_of_time.enabled is false"
    chosen = {"two_tower": _pick(conn, "two_tower", oot_cfg.two_tower), "als": _pick(conn, "als", oot_cfg.als)}
    found = {k: r for k, r in chosen.items() if r is not None and trained_until(r) is not None}
    if not found:
        named = ", ".join(f"{k} {r.version}" for k, r in chosen.items() if r) or "no two-tower or ALS"
        return None, f"{named}: no model records when its training data ends (trained_until)"
    makers = {"two_tower": two_tower_scorer, "als": als_scorer}
    scorers = {k: makers[k](conn, r.version, items) for k, r in found.items()}
    since = max(trained_until(r) for r in found.values())
    return OutOfTimeScores(scorers, since, {k: r.version for k, r in found.items()}), ""
