"""Nearest neighbours in one live vector set: searched in the replica's memory, or by pgvector's HNSW.

Postgres holds every vector set (the store of record) and its HNSW index. A replica already holds the
live sets in memory (the user tower needs the item vectors, content search its anchors), and at this
catalog's size a scan there costs less than the round trip to Postgres and spends none of Postgres's
CPU: for 12k 64-d two-tower vectors one matrix-vector product and a partial sort, ~0.2 ms, exact.
A 384-d content set is 18 MB, and one exact pass over it costs ~4 ms of memory bandwidth here; so a
set wider than `serve.vector_scan_dims` is scanned in its first principal components for
`serve.vector_rerank_factor` x k candidates, which are then ranked by their exact cosine (~0.4 ms,
recall@120 in docs/benchmarks.md). Above `serve.exact_search_max_items` items the HNSW index answers.
Every path returns (sku, cosine similarity), best first.
"""

from __future__ import annotations

import numpy as np

from recsys.catalog import vectors


class VectorIndex:
    def __init__(self, version: str, dim: int, skus: list[str], matrix: np.ndarray, pool, exact_max_items: int,
                 scan_dims: int = 1 << 30, rerank_factor: int = 4):
        self.version, self.dim, self.skus, self.pool = version, dim, list(skus), pool
        self.in_memory = len(self.skus) <= exact_max_items
        self.unit = self.projection = self.scan = None
        self.rerank_factor = rerank_factor
        if not self.in_memory:
            return
        unit = np.asarray(matrix, dtype=np.float32)
        norms = np.linalg.norm(unit, axis=1, keepdims=True)
        self.unit = unit / np.where(norms > 0, norms, 1.0)
        if unit.shape[1] > scan_dims:   # wide: scan the leading principal components, rerank exactly
            _, _, vt = np.linalg.svd(self.unit - self.unit.mean(axis=0), full_matrices=False)
            self.projection = np.ascontiguousarray(vt[:scan_dims].T)
            self.scan = self.unit @ self.projection

    @property
    def exact(self) -> bool:
        return self.in_memory and self.projection is None

    def search(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        if not self.in_memory:
            with self.pool.connection(timeout=1) as conn:
                return vectors.search(conn, self.version, self.dim, query, k)
        q = np.asarray(query, dtype=np.float32)
        q = q / (np.linalg.norm(q) or 1.0)
        if self.projection is None:
            rows, scores = None, self.unit @ q
        else:
            rows = _top(self.scan @ (q @ self.projection), k * self.rerank_factor)
            scores = self.unit[rows] @ q
        top = _top(scores, k)
        top = top[np.argsort(-scores[top], kind="stable")]
        found = top if rows is None else rows[top]
        return [(self.skus[i], float(s)) for i, s in zip(found, scores[top])]


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, in no particular order."""
    k = min(k, len(scores))
    return np.argpartition(-scores, k - 1)[:k] if k > 0 else np.zeros(0, dtype=np.int64)
