"""Beauty's served path (recsys.train.beauty_served): the ranker's features by hand, and on a toy task
the ranker learns what an untrained retrieval model misses, through a real pgvector HNSW set."""

import numpy as np
import pytest

from recsys.models.two_tower import TwoTowerConfig
from recsys.services import Postgres
from recsys.train.als import ALSConfig, ALSRecommender
from recsys.train.beauty_served import FEATURES, ItemSignals, served_metrics
from recsys.train.popularity import interaction_matrix
from recsys.train.splits import leave_one_out
from recsys.train.two_tower import ItemFeatures, build_model

N_ITEMS = 40


def column(x, name):
    return x[:, FEATURES.index(name)]


def test_item_signals_by_hand():
    # training prefixes (the last two items of each sequence are validation and test)
    seqs = [[0, 1, 2, 9, 9], [1, 2, 8, 8], [3, 0, 7, 7]]
    split = leave_one_out([np.array(s) for s in seqs], [np.arange(len(s)) for s in seqs])
    assert [list(s) for s in split.train] == [[0, 1, 2], [1, 2], [3, 0]]
    tags = [[0], [0, 1], [1], [2]] + [[] for _ in range(6)]
    als = ALSRecommender(ALSConfig(factors=4, iterations=2)).fit(interaction_matrix(split.train, 10))
    signals = ItemSignals(split, 10, tags, 3, als)
    x = signals.features([np.array([0, 1])], np.array([[2, 3, -1]]), np.array([[0.9, 0.5, np.nan]], np.float32))
    assert x.shape == (3, len(FEATURES))
    np.testing.assert_allclose(column(x, "retrieval_rank")[:2], [0, 1])
    np.testing.assert_allclose(column(x, "follows_last")[:2], np.log1p([2, 0]))        # 1 -> 2 twice
    np.testing.assert_allclose(column(x, "co_history")[:2], np.log1p([(1 + 2) / 2, (1 + 0) / 2]))
    np.testing.assert_allclose(column(x, "tags_last")[:2], [1.0, 0.0])                  # item 2's tag is item 1's
    np.testing.assert_allclose(column(x, "tags_history")[:2], [0.5, 0.0])               # in one of two items
    np.testing.assert_allclose(column(x, "log_popularity")[:2], np.log1p([2, 1]))
    np.testing.assert_allclose(column(x, "history_length")[:2], [2, 2])
    assert np.isnan(x[2]).all()                                                          # no candidate there


def toy_sequences(n_users=400, seed=0):
    """Next item is prev + 1 (90%): an untrained model cannot see it, the follows_last feature can."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_users):
        s = [int(rng.integers(N_ITEMS))]
        for _ in range(int(rng.integers(5, 10)) - 1):
            s.append((s[-1] + (1 if rng.random() < 0.9 else int(rng.integers(2, N_ITEMS)))) % N_ITEMS)
        seqs.append(np.array(s))
    return seqs, [np.arange(len(s)) * 86400 for s in seqs]


def test_served_path_reranks_what_retrieval_found(stack):
    seqs, ts = toy_sequences()
    split = leave_one_out(seqs, ts, max_len=20)
    cfg = TwoTowerConfig(dim=8, max_len=20, n_layers=1, n_heads=1, use_recency=False, id_only=True)
    untrained = build_model(cfg, ItemFeatures(N_ITEMS)).eval()
    data = {"n_items": N_ITEMS, "tags": [[i % 3] for i in range(N_ITEMS)], "n_tags": 3}
    m = served_metrics(untrained, split, data, Postgres(stack).dsn, "test-toy", ALSConfig(factors=8, iterations=3),
                       ks=(10,), log=lambda s: None)
    assert m["retrieval.HR@120"] == pytest.approx(1.0)          # 40 items: every target is a candidate
    assert m["retrieval.NDCG@10"] < 0.25                        # random order
    assert m["served.NDCG@10"] > 0.6 and m["served.HR@10"] > 0.85
    assert m["gain.follows_last"] == max(m[f"gain.{f}"] for f in FEATURES)
    with __import__("psycopg").connect(Postgres(stack).dsn) as conn:  # the scratch vector set is gone
        assert conn.execute("SELECT count(*) FROM vector_sets WHERE model_version = 'beauty-served-test-toy'"
                            ).fetchone()[0] == 0
