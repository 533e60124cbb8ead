"""pgvector sets: HNSW search finds true neighbours, a new set is built beside the live one and
switched atomically, and a live set cannot be retired."""

import numpy as np
import pytest

from recsys.catalog import vectors


def unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture
def skus(pg):
    return [r[0] for r in pg.execute("SELECT sku FROM items ORDER BY sku LIMIT 200")]


def test_hnsw_search_matches_exact_search(pg, skus, world):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(8, 32))
    matrix = unit(centers[rng.integers(0, 8, len(skus))] + 0.3 * rng.normal(size=(len(skus), 32)))
    vectors.write_vectors(pg, "test-a", "test", skus, matrix)
    vectors.prepare(pg, 40)
    for q in range(5):
        query = matrix[q]
        got = vectors.search(pg, "test-a", 32, query, 20)
        exact = np.argsort(-(matrix @ query))[:20]
        assert {s for s, _ in got} == {skus[i] for i in exact}
        assert got[0][0] == skus[q] and got[0][1] == pytest.approx(1.0, abs=1e-5)
    with pg.transaction():  # 200 rows are too few for the planner to prefer it; prove the index matches
        pg.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
        plan = "\n".join(r[0] for r in pg.execute(
            "EXPLAIN " + vectors.search_sql("test-a", 32).as_string(pg), {"q": matrix[0], "k": 20}))
    assert f"Index Scan using {vectors.index_name('test-a')}" in plan
    vectors.retire(pg, "test-a")


def test_new_set_is_built_beside_the_live_one_and_switched_atomically(pg, skus, world):
    rng = np.random.default_rng(1)
    vectors.write_vectors(pg, "test-v1", "test", skus, unit(rng.normal(size=(len(skus), 16))))
    vectors.make_live(pg, "test-v1")
    assert vectors.live_version(pg, "test") == ("test-v1", 16)
    vectors.write_vectors(pg, "test-v2", "test", skus, unit(rng.normal(size=(len(skus), 24))))
    assert vectors.live_version(pg, "test") == ("test-v1", 16)  # building v2 does not touch v1
    vectors.make_live(pg, "test-v2")
    assert vectors.live_version(pg, "test") == ("test-v2", 24)
    states = dict(pg.execute("SELECT model_version, state FROM vector_sets WHERE model_version LIKE 'test-v%'").fetchall())
    assert states == {"test-v1": "ready", "test-v2": "live"}
    with pytest.raises(ValueError, match="is live"):
        vectors.retire(pg, "test-v2")
    vectors.retire(pg, "test-v1")
    assert pg.execute("SELECT count(*) FROM item_vectors WHERE model_version = 'test-v1'").fetchone()[0] == 0
    with pytest.raises(ValueError, match="not ready"):
        vectors.make_live(pg, "test-v1")
    with pytest.raises(ValueError, match="must match"):
        vectors.write_vectors(pg, "bad'; drop table items;--", "test", skus, unit(rng.normal(size=(len(skus), 4))))
    pg.execute("DELETE FROM vector_sets WHERE purpose = 'test'")
    vectors.retire(pg, "test-v2")
