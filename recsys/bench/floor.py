"""The floor: the serving pipeline's own time, in-process, without HTTP or Ray. Set against the HTTP
figures of the same requests, it shows what the transport and the topology cost."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

import numpy as np

from recsys.bench.requests import request_of
from recsys.serve.recommender import Recommender


def bench_floor(cfg, paths: dict[str, list[str]], n: int) -> dict[str, tuple[float, str]]:
    """Per surface: p50/p95 of `Recommender.recommend` over n requests that miss the response cache,
    then of the same requests again, answered from it."""
    recommender = Recommender(cfg)
    recommender.cache.clear()
    figures: dict[str, tuple[float, str]] = {}
    for surface, surface_paths in paths.items():
        requests = [request_of(p) for p in surface_paths[:n]]
        for req in requests[:20]:  # warm-up (connections, first queries); k differs, so nothing is cached for later
            recommender.recommend(replace(req, k=req.k - 1))
        for label in ("", "cached."):
            ms = []
            for req in requests:
                start = time.perf_counter()
                recommender.recommend(replace(req, request_id=uuid.uuid4().hex))
                ms.append((time.perf_counter() - start) * 1000)
            p50, p95 = float(np.percentile(ms, 50)), float(np.percentile(ms, 95))
            print(f"  floor {surface:<14} {label or 'miss.':<8} p50 {p50:6.2f} ms, p95 {p95:6.2f} ms")
            figures[f"serve.floor.{surface}.{label}p50_ms"] = (p50, "ms")
            figures[f"serve.floor.{surface}.{label}p95_ms"] = (p95, "ms")
    return figures
