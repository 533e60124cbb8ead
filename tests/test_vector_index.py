"""A replica's vector search: the exact in-memory path and pgvector's HNSW path answer the same top K."""

import numpy as np
import pytest
from psycopg_pool import ConnectionPool

from recsys.catalog import vectors
from recsys.serve.vector_index import VectorIndex


@pytest.fixture
def vector_set(pg, world):
    skus = [r[0] for r in pg.execute("SELECT sku FROM items ORDER BY sku LIMIT 300")]
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(6, 24))
    matrix = (centers[rng.integers(0, 6, len(skus))] + 0.4 * rng.normal(size=(len(skus), 24))).astype(np.float32)
    matrix *= rng.uniform(0.5, 2.0, size=(len(skus), 1)).astype(np.float32)   # not unit: cosine must normalise
    vectors.write_vectors(pg, "test-index", "test-index", skus, matrix)
    yield skus, matrix
    vectors.retire(pg, "test-index")


def test_exact_and_hnsw_paths_return_the_same_top_k(world, vector_set):
    from recsys.services import Postgres

    skus, matrix = vector_set
    # ef_search past the set's size: the HNSW walk visits every item, so its answer is exact too
    with ConnectionPool(Postgres(world).dsn, min_size=1, max_size=1, kwargs={"autocommit": True},
                        configure=lambda conn: vectors.prepare(conn, 400)) as pool:
        exact = VectorIndex("test-index", 24, skus, matrix, pool, exact_max_items=len(skus))
        hnsw = VectorIndex("test-index", 24, skus, matrix, pool, exact_max_items=len(skus) - 1)
        assert exact.exact and not hnsw.exact
        rng = np.random.default_rng(8)
        for query in [matrix[3], matrix[120], rng.normal(size=24).astype(np.float32)]:
            a, b = exact.search(query, 40), hnsw.search(query, 40)
            assert [s for s, _ in a] == [s for s, _ in b]
            assert np.allclose([v for _, v in a], [v for _, v in b], atol=1e-5)
        assert exact.search(matrix[3], 1)[0] == (skus[3], pytest.approx(1.0, abs=1e-5))


def test_a_wide_set_is_scanned_in_its_principal_components_and_reranked_exactly():
    rng = np.random.default_rng(9)
    skus = [f"s{i}" for i in range(3000)]
    centers = rng.normal(size=(40, 256))
    matrix = (centers[rng.integers(0, 40, len(skus))] + 0.5 * rng.normal(size=(len(skus), 256))).astype(np.float32)
    exact = VectorIndex("wide", 256, skus, matrix, None, exact_max_items=len(skus))
    scanned = VectorIndex("wide", 256, skus, matrix, None, exact_max_items=len(skus), scan_dims=48, rerank_factor=4)
    assert exact.exact and not scanned.exact and scanned.projection.shape == (256, 48)
    recalls = []
    for i in range(0, 3000, 150):
        want, got = exact.search(matrix[i], 60), scanned.search(matrix[i], 60)
        recalls.append(len({s for s, _ in want} & {s for s, _ in got}) / 60)
        assert got == sorted(got, key=lambda pair: -pair[1])            # best first, exact cosines
        assert got[0] == (skus[i], pytest.approx(1.0, abs=1e-5))
    assert np.mean(recalls) >= 0.95, recalls
