"""The serving-latency gate: load a candidate version as a replica would and time the work it adds
to one request, in this process (no HTTP, no other stage): p95 over `requests` synthetic requests."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import psycopg

from recsys import registry

K = 120   # candidates a source returns and the ranker scores


def _p95(call, requests: int) -> float:
    call(0)   # the first call pays one-off costs (ONNX session warm-up) a replica pays at start
    took = []
    for i in range(requests):
        start = time.perf_counter()
        call(i)
        took.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(took, 95))


def _top_k(scores: np.ndarray) -> np.ndarray:
    top = np.argpartition(-scores, min(K, len(scores) - 1))[:K]
    return top[np.argsort(-scores[top])]


def two_tower_p95(conn: psycopg.Connection, record: registry.ModelRecord, requests: int) -> float:
    """The ONNX user tower over 20 recent views and an exact top-120 over the version's item vectors."""
    from recsys.catalog import vectors
    from recsys.models.two_tower import OnnxUserTower

    skus, matrix = vectors.read_vectors(conn, record.version)
    if not skus:
        raise ValueError(f"no item vectors for {record.version}")
    tower = OnnxUserTower(Path(record.artifact_uri), (record.version, matrix.shape[1]), skus, matrix)
    rng, now = np.random.default_rng(0), time.time()
    histories = [[(skus[j], now - 60 * n) for n, j in enumerate(rng.choice(len(skus), 20))] for _ in range(8)]
    return _p95(lambda i: _top_k(matrix @ tower.user_vector(histories[i % 8], now)), requests)


def als_p95(record: registry.ModelRecord, requests: int) -> float:
    """A fold-in user vector from 20 items and a score over every item."""
    from recsys.models.als import ALSFactors

    als = ALSFactors(Path(record.artifact_uri))
    rng = np.random.default_rng(0)
    rows = [list(rng.choice(len(als.skus), 20)) for _ in range(8)]
    return _p95(lambda i: _top_k(als.items @ als.user_vector("", rows[i % 8])), requests)


def ranker_p95(record: registry.ModelRecord, requests: int) -> float:
    """The ranker over 120 candidates' 28 features."""
    from recsys.models.ranker import load_ranker
    from recsys.rank.features import NAMES

    ranker = load_ranker(record.artifact_uri, record.config)
    X = np.random.default_rng(0).random((K, len(NAMES)))
    return _p95(lambda i: ranker.score(X), requests)


def serving_p95_ms(conn: psycopg.Connection, cfg, record: registry.ModelRecord, kind: str, requests: int) -> float:
    if kind == "two_tower":
        return two_tower_p95(conn, record, requests)
    if kind == "als":
        return als_p95(record, requests)
    if kind == "ranker":
        return ranker_p95(record, requests)
    if kind == "content":   # timed while the cold-item job measured its self-recall (recsys/train/cold_items.py)
        if "content.item_tower_p95_ms" not in record.metrics:
            raise ValueError("the cold-item job recorded no item-tower timing")
        return float(record.metrics["content.item_tower_p95_ms"])
    raise ValueError(f"no latency probe for kind {kind!r}")
