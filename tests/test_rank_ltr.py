"""Learning to rank on the small world: LightGBM lambdarank through Ray Train and the MLP both beat
retrieval order on NDCG@12 over the time-based validation lists; saved models score identically."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from recsys.rank.features import NAMES as FEATURE_NAMES

from tests.conftest import make_cfg

OVERRIDES = ("ranker.max_requests=1000", "ranker.lightgbm.cpus_per_worker=0.5", "ranker.lightgbm.num_boost_round=60",
             "ranker.lightgbm.early_stopping_rounds=15", "ranker.mlp.epochs=6", "ranker.mlp.patience=3",
             "ranker.xgboost.cpus_per_worker=0.5", "ranker.xgboost.num_boost_round=60",
             "ranker.xgboost.early_stopping_rounds=15")


@pytest.fixture(scope="module")
def lists():
    from recsys.data import generate
    from recsys.rank.features import ItemTable
    from recsys.rank.offline import build_lists

    cfg = make_cfg(*OVERRIDES)
    catalog, events = generate(cfg)
    return cfg, build_lists(events, ItemTable.from_frames(catalog.items, catalog.edges), cfg.features, cfg.ranker)


def test_lightgbm_save_load_gives_identical_scores(lists, tmp_path):
    import lightgbm as lgb
    from omegaconf import OmegaConf

    from recsys.rank.features import NAMES
    from recsys.models.ranker import LTRRanker

    cfg, data = lists
    train, valid = data.split()
    booster = lgb.train(OmegaConf.to_container(cfg.ranker.lightgbm.params),
                        lgb.Dataset(train.X, train.y, group=train.group, feature_name=list(NAMES)), 20)
    ranker = LTRRanker(booster)
    loaded = LTRRanker.load(ranker.save(tmp_path / "model.txt"))
    np.testing.assert_array_equal(loaded.score(valid.X), ranker.score(valid.X))
    assert loaded.contributions(valid.X[:3]).shape == (3, 29)


def test_mlp_trains_beats_retrieval_order_and_round_trips(lists, tmp_path):
    from recsys.rank.evaluate import compare
    from recsys.rank.mlp import MLPRanker, train_mlp

    cfg, data = lists
    train, valid = data.split()
    ranker, info = train_mlp(train, valid, cfg.ranker.mlp, seed=0)
    metrics = compare(valid, {"mlp": ranker})
    assert metrics["mlp_ndcg@12"] > metrics["retrieval_order_ndcg@12"] + 0.05, metrics
    loaded = MLPRanker.load(ranker.save(tmp_path / "mlp.pt"))
    np.testing.assert_array_equal(loaded.score(valid.X), ranker.score(valid.X))


def test_train_cli_lightgbm_on_ray_beats_retrieval_order(stack):
    """`python -m recsys.rank.train`: Postgres log -> lists -> Ray Train LightGBM and XGBoost + MLP -> registry."""
    from recsys.data import load_world
    from recsys.rank.evaluate import ndcg_at_k
    from recsys.models.ranker import MODEL_FILE, LTRRanker
    from recsys.rank.train import read_log, run, training_lists
    from recsys.raycluster import ensure_ray
    from recsys.registry import models as registry
    from recsys.services import Postgres

    cfg = make_cfg(*OVERRIDES, "ranker.mlp.epochs=2")       # the MLP has its own test above
    load_world(stack)
    ensure_ray(cfg)
    with psycopg.connect(Postgres(stack).dsn, autocommit=True) as conn:   # another test's ranker: retired,
        conn.execute("UPDATE models SET stage = 'retired' WHERE kind = 'ranker' AND stage = 'live'")  # this one goes live
    result = run(cfg)
    k = "ndcg@12"
    assert result[f"lightgbm_{k}"] > result[f"retrieval_order_{k}"] + 0.05, result
    assert 0 < result[f"mlp_{k}"] <= 1, result      # 2 epochs here: its own test above asserts what it learns
    assert result[f"xgboost_{k}"] > result[f"retrieval_order_{k}"] + 0.05, result   # XGBoostTrainer, same lists
    with psycopg.connect(Postgres(stack).dsn, autocommit=True) as conn:
        record = registry.get(conn, result["version"])
        # The saved model text reproduces the reported number (on the same lists, out of time or not).
        valid = training_lists(conn, cfg)[0].split()[1]
        events = read_log(conn)
    assert record.kind == "ranker" and record.metrics[f"lightgbm_{k}"] == result[f"lightgbm_{k}"]
    ranker = LTRRanker.load(f"{record.artifact_uri}/{MODEL_FILE}")
    assert ndcg_at_k(ranker.score(valid.X), valid, 12) == pytest.approx(result[f"lightgbm_{k}"], abs=1e-12)

    # Serving with `serve.ranker=ltr` now ranks with this (live) model and explains with its features.
    from recsys.serve.recommender import Recommender
    from recsys.serve.request import RecRequest

    assert result["promoted"] and record.gates["passed"] and registry.live(psycopg.connect(Postgres(stack).dsn), "ranker").version == record.version
    serving = Recommender(make_cfg("serve.ranker=ltr", "serve.budgets_ms.ranker=5000", "surfaces.homepage_hero.cache_ttl_s=0"))
    user = events.loc[events["user_id"].str.match(r"^u[0-9]+$"), "user_id"].iloc[-1]
    body = serving.recommend(RecRequest(surface="homepage_hero", user_id=user, explain=True))
    assert len(body["items"]) == 12 and not any(d.startswith("ranker") for d in body["degraded"]), body["degraded"]
    names = set(FEATURE_NAMES)
    assert all(set(i["explain"]["contributions"]) <= names for i in body["items"])
