"""The approximate nearest-neighbour query alone: pgvector HNSW over the live content vectors, timed
as serving issues it, and its recall@K against exact search over the same vectors (numpy)."""

from __future__ import annotations

import time

import numpy as np
import psycopg

from recsys.catalog import vectors


def bench_ann(cfg, n_queries: int, k: int) -> dict[str, tuple[float, str]]:
    from recsys.services import Postgres

    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        live = vectors.live_version(conn, "content")
        if live is None:
            raise RuntimeError("no live content vector set: run `recsys embed` first")
        version, dim = live
        skus, matrix = vectors.read_vectors(conn, version)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        rng = np.random.default_rng(int(cfg.seed))
        ef_search = int(cfg.embedding.hnsw_ef_search)
        vectors.prepare(conn, ef_search)
        for i in rng.choice(len(skus), size=min(20, len(skus)), replace=False):  # warm-up
            vectors.search(conn, version, dim, matrix[i], k)
        ms, recalls = [], []
        for i in rng.choice(len(skus), size=min(n_queries, len(skus)), replace=False):
            query = matrix[i]
            start = time.perf_counter()
            found = vectors.search(conn, version, dim, query, k)
            ms.append((time.perf_counter() - start) * 1000)
            exact = np.argpartition(-(matrix @ query), k - 1)[:k]
            recalls.append(len({sku for sku, _ in found} & {skus[j] for j in exact}) / k)
    recall_name = f"ann.content.recall_at_{k}"
    figures = {"ann.content.p50_ms": (float(np.percentile(ms, 50)), "ms"),
               "ann.content.p95_ms": (float(np.percentile(ms, 95)), "ms"),
               recall_name: (float(np.mean(recalls)), "fraction")}
    print(f"  ann {version} ({len(skus)} x {dim}, ef_search {ef_search}): "
          f"p50 {figures['ann.content.p50_ms'][0]:.2f} ms, p95 {figures['ann.content.p95_ms'][0]:.2f} ms, "
          f"recall@{k} {figures[recall_name][0]:.3f}")
    return figures
