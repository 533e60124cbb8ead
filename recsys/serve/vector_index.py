"""Nearest neighbours in one live vector set: exact search in the replica's memory, or pgvector's HNSW.

Postgres holds every vector set (the store of record) and its HNSW index. A replica already holds the
live sets in memory (the user tower needs the item vectors, content search its anchors), and at this
catalog's size an exact search there (one matrix-vector product, a partial sort) costs less than the
round trip to Postgres, has recall 1, and spends none of Postgres's CPU. Above
`serve.exact_search_max_items` items the product grows past that and the HNSW index answers instead.
Both return (sku, cosine similarity), best first.
"""

from __future__ import annotations

import numpy as np

from recsys.catalog import vectors


class VectorIndex:
    def __init__(self, version: str, dim: int, skus: list[str], matrix: np.ndarray, pool, exact_max_items: int):
        self.version, self.dim, self.skus, self.pool = version, dim, list(skus), pool
        self.exact = len(self.skus) <= exact_max_items
        unit = np.asarray(matrix, dtype=np.float32)
        norms = np.linalg.norm(unit, axis=1, keepdims=True)
        self.unit = unit / np.where(norms > 0, norms, 1.0) if self.exact else None

    def search(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        if not self.exact:
            with self.pool.connection(timeout=1) as conn:
                return vectors.search(conn, self.version, self.dim, query, k)
        q = np.asarray(query, dtype=np.float32)
        q = q / (np.linalg.norm(q) or 1.0)
        scores = self.unit @ q
        k = min(k, len(scores))
        if k == 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.skus[i], float(scores[i])) for i in top]
