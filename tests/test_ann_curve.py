"""The ANN bench's curve (recsys/bench/ann.py): it runs on a tiny set, its indexes are built on a scratch
copy that is dropped afterwards, and the live set (rows, index, state) is the same before and after."""

import numpy as np
import pytest

from recsys.bench import ann
from recsys.catalog import vectors

VERSION, PURPOSE = "test-ann-live", "test-ann"


def unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def snapshot(pg):
    """Everything of the live set the curve must not change: its rows, the table's indexes (the live
    index's file too: a rebuild gets a new one), the set's row, the tables there are."""
    rows = pg.execute("SELECT sku, embedding::text FROM item_vectors WHERE model_version = %s ORDER BY sku",
                      (VERSION,)).fetchall()
    indexes = pg.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'item_vectors' "
                         "ORDER BY indexname").fetchall()
    node = pg.execute("SELECT relfilenode FROM pg_class WHERE relname = %s", (vectors.index_name(VERSION),)).fetchone()
    sets = pg.execute("SELECT model_version, purpose, dim, index_name, state FROM vector_sets "
                      "WHERE purpose = %s", (PURPOSE,)).fetchall()
    tables = pg.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").fetchall()
    return rows, indexes, node, sets, tables, vectors.index_params(pg, vectors.index_name(VERSION))


@pytest.fixture
def live_set(pg):
    rng = np.random.default_rng(0)
    n, dim = 300, 16
    skus = [f"ann-{i:04d}" for i in range(n)]
    centers = rng.normal(size=(6, dim))
    matrix = unit(centers[rng.integers(0, 6, n)] + 0.5 * rng.normal(size=(n, dim)))
    vectors.write_vectors(pg, VERSION, PURPOSE, skus, matrix, m=8, ef_construction=32)
    vectors.make_live(pg, VERSION)
    yield skus, matrix
    pg.execute("DELETE FROM vector_sets WHERE purpose = %s", (PURPOSE,))
    vectors.retire(pg, VERSION)


def test_curve_runs_on_a_scratch_copy_and_leaves_the_live_set_alone(pg, live_set):
    skus, matrix = live_set
    assert vectors.index_params(pg, vectors.index_name(VERSION)) == {"m": 8, "ef_construction": 32}
    before = snapshot(pg)
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(30, matrix.shape[1])).astype(np.float32)  # not item vectors, like users'
    k = 20
    _, truth = ann.time_exact(matrix, ann.unit(queries), k)
    vectors.prepare(pg)
    pg.execute("SET enable_seqscan = off")  # 300 rows: the planner would rather sort them all
    iterative = [10] if ann._version_tuple(ann.pgvector_version(pg)) >= (0, 8) else []
    rows = ann.curve(pg, VERSION, matrix.shape[1], skus, queries, truth, k, [8], [32], [20, 60],
                     iterative, log=lambda line: None)
    assert len(rows) == 2 + len(iterative)
    for row in rows:
        assert row["index_scan"] and row["m"] == 8 and row["ef_construction"] == 32
        # (the 5th percentile of per-query recall can sit above the mean: most queries at 1, a few below)
        assert 0 < row["p50_ms"] <= row["p95_ms"] and 0 <= row["recall_p5"] <= 1 and 0 <= row["recall"] <= 1
        assert row["pages"] > 0
    wider = {r["ef_search"]: r for r in rows if r["iterative"] == "off"}
    assert wider[60]["pages"] >= wider[20]["pages"] and wider[60]["recall"] >= wider[20]["recall"]
    assert max(r["recall"] for r in rows if r["iterative"] == "off") >= 0.9
    chosen, met = ann.choose(rows, min_recall=0.0, max_p95_ms=1e9)
    assert met and chosen in rows and chosen["pages"] == min(r["pages"] for r in rows)   # the least work
    fallback, met = ann.choose(rows, min_recall=0.0, max_p95_ms=0.0)   # the recall alone: flagged
    assert not met and fallback in rows
    assert ann.choose(rows, min_recall=1.01, max_p95_ms=1e9) == (None, False)
    assert snapshot(pg) == before  # no scratch table left, the live rows and index as they were
    assert not pg.execute("SELECT 1 FROM pg_tables WHERE tablename LIKE 'ann_scratch_%'").fetchall()


def test_scratch_copy_is_dropped_when_the_measurement_fails(pg, live_set):
    before = snapshot(pg)
    with pytest.raises(RuntimeError):
        with ann.scratch_copy(pg, VERSION) as table:
            count = pg.execute(f"SELECT count(*) FROM {table} WHERE model_version = %s", (VERSION,)).fetchone()[0]
            assert count == len(live_set[0])
            ann.build_scratch_index(pg, table, VERSION, live_set[1].shape[1], 8, 16)
            raise RuntimeError("boom")
    assert snapshot(pg) == before


def test_user_queries_are_the_live_versions_user_vectors(stack):
    from recsys.features.online_store import OnlineStore, user_key

    r, prefix = OnlineStore.from_config(stack).r, stack.services.redis.key_prefix
    dim, rng = 8, np.random.default_rng(2)
    mine = {f"user-{i}": rng.normal(size=dim).astype(np.float32) for i in range(5)}
    for user, vec in mine.items():
        r.hset(user_key(prefix, user, "vec"), mapping={"version": "tt-v2", "vector": vec.tobytes()})
    r.hset(user_key(prefix, "old", "vec"), mapping={"version": "tt-v1", "vector": np.ones(dim, np.float32).tobytes()})
    r.hset(user_key(prefix, "wrong-dim", "vec"),
           mapping={"version": "tt-v2", "vector": np.ones(3, np.float32).tobytes()})
    try:
        got = ann.user_queries(r, prefix, "tt-v2", dim, 100, np.random.default_rng(0))
        assert got.shape == (5, dim)
        assert {v.tobytes() for v in got} == {v.tobytes() for v in mine.values()}
        again = ann.user_queries(r, prefix, "tt-v2", dim, 3, np.random.default_rng(0))
        assert len(again) == 3 and np.array_equal(again, ann.user_queries(r, prefix, "tt-v2", dim, 3,
                                                                           np.random.default_rng(0)))
        assert len(ann.user_queries(r, prefix, "tt-v3", dim, 100, np.random.default_rng(0))) == 0
    finally:
        for user in [*mine, "old", "wrong-dim"]:
            r.delete(user_key(prefix, user, "vec"))


def test_hnsw_params_per_purpose():
    from omegaconf import OmegaConf

    emb = OmegaConf.create({"hnsw_m": 16, "hnsw_ef_construction": 128, "hnsw_ef_search": 120})
    assert vectors.hnsw_params(emb, "retrieval") == (16, 128, 120)
    emb.retrieval_hnsw = {"m": 32, "ef_search": 200}
    assert vectors.hnsw_params(emb, "retrieval") == (32, 128, 200)
    assert vectors.hnsw_params(emb, "content") == (16, 128, 120)
