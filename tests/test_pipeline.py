"""The training pipeline end to end on the small world, submitted as a Ray job to a real local head."""

import json
import os
import subprocess
import sys
import time

import psycopg
import pytest

from recsys import registry
from recsys.catalog import vectors
from recsys.services import Postgres, Ray
from recsys.models.user_vectors import UserVectorStore
from recsys.features.online_store import OnlineStore
from tests.conftest import TEST_OVERRIDES, free_port, make_cfg

# Two epochs on 400 shoppers: the two-tower's NDCG floor is for real models (the gates have their own tests),
# and this world's history ends at the current hour, so its holdout NDCG moves with the clock (0.0027 at
# some hours, under the 0.005 floor).
TINY = ["model.epochs=2", "model.dim=32", "pipeline.eval_users=200", "pipeline.valid_users=100",
        "pipeline.num_workers=2", "pipeline.cpus_per_worker=0.25", "gates.two_tower.checks.0.floor=0.0",
        "gates.two_tower.checks.0.live_tolerance=1.0"]


@pytest.fixture(scope="module")
def head(world):
    """A Ray head with its job server, on ports of the test's own."""
    overrides = [f"services.ray.port={free_port()}", f"services.ray.dashboard_port={free_port()}",
                 "services.ray.object_store_bytes=200000000"]
    overrides += [f"services.ray.agent_ports.{name}={free_port()}" for name in
                  ("dashboard_agent_listen_port", "dashboard_agent_grpc_port", "metrics_export_port",
                   "runtime_env_agent_port")]
    cfg = make_cfg(*overrides)
    ray_head = Ray(cfg)
    ray_head.start()
    yield cfg, overrides
    ray_head.stop()


def test_pipeline_as_a_ray_job(head):
    cfg, overrides = head
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    args = [a for a in TEST_OVERRIDES + overrides + TINY]
    started = time.monotonic()
    while True:  # right after `ray start` the job server may have no agent yet: it says so, retry
        job = subprocess.run(
            [ray_cli, "job", "submit", "--address", Ray(cfg).job_address, "--working-dir", ".",
             "--", "python", "-m", "recsys.train.pipeline", *args],
            capture_output=True, text=True, timeout=600, cwd=os.path.dirname(os.path.dirname(__file__)),
            env={**os.environ, "RAY_ADDRESS": ""})
        output = job.stdout + job.stderr
        if "No available agent" not in output or time.monotonic() - started > 90:
            break
        time.sleep(3)
    assert job.returncode == 0, output[-4000:]
    assert "two-tower epoch  1" in output                         # progress is visible while it runs
    assert time.monotonic() - started < 300
    result = json.loads([line for line in output.splitlines() if line.startswith('{"version"')][-1])
    assert result["promoted"] and result["onnx_item_max_abs_diff"] < 1e-4 and result["onnx_user_max_abs_diff"] < 1e-4
    for model in ("popularity", "als", "two_tower", "content"):
        assert 0 <= result[f"{model}.ndcg@12"] <= 1 and 0 <= result[f"{model}.recall@120"] <= 1
    assert result["ann.recall_vs_exact@120"] >= 0.9

    with psycopg.connect(Postgres(cfg).dsn) as conn:
        live = registry.live(conn, "two_tower")
        assert live is not None, output[-6000:]
        assert live.version == result["version"] and os.path.exists(os.path.join(live.artifact_uri, "item_tower.onnx"))
        assert registry.live(conn, "als") is not None
        assert vectors.live_version(conn, "retrieval") == (result["version"], 32)
        user = conn.execute("SELECT user_id FROM events WHERE user_id ~ '^u[0-9]+$' ORDER BY ts DESC LIMIT 1").fetchone()[0]
    store = UserVectorStore(OnlineStore.from_config(cfg).r, cfg.services.redis.key_prefix)
    vec, _ = store.get_user(user, result["version"])
    assert vec.shape == (32,)
    name, centroid = store.cohort(result["version"], "never-seen-device", None, None)
    assert name == "*|*|*" and centroid.shape == (32,)


def test_a_new_sku_gets_a_vector_from_content_alone(head):
    """After the job above: a SKU the live model never saw is embedded by the ONNX item tower,
    exactly as the torch item tower does it with the ID part zero."""
    import json
    from pathlib import Path

    import numpy as np
    import torch
    from pgvector.psycopg import register_vector

    from recsys.catalog.embed import encode_texts
    from recsys.train.cold_items import embed_cold_items
    from recsys.train.dataset import load_item_features
    from recsys.models.two_tower import TwoTowerConfig
    from recsys.train.two_tower import build_model

    cfg, _ = head
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        register_vector(conn)
        device, category = conn.execute("SELECT src_sku, i.category FROM item_edges e JOIN items i ON i.sku = e.dst_sku "
                                         "ORDER BY src_sku LIMIT 1").fetchone()
        conn.execute("INSERT INTO items (sku, title, category, price_band, margin, spec_text, stock) VALUES "
                     "('NEW-1', 'Brand-new case', %s, 2, 0.5, 'A brand-new protective case', 10)", (category,))
        conn.execute("INSERT INTO item_edges (src_sku, dst_sku, kind, weight) VALUES (%s, 'NEW-1', 'accessory', 1)",
                     (device,))
        assert "1 new SKUs embedded" in embed_cold_items(cfg)
        live = vectors.live_version(conn, "retrieval")
        got = conn.execute("SELECT embedding FROM item_vectors WHERE model_version = %s AND sku = 'NEW-1'",
                           (live[0],)).fetchone()[0].to_numpy()
        assert "every SKU has a vector" in embed_cold_items(cfg)
        content = registry.live(conn, "content")   # the new SKU's vector went in through the content gates
        assert content.gates["passed"] and "content.self_recall@120 >= floor" in {c["name"] for c in content.gates["checks"]}
        folder = Path(registry.live(conn, "two_tower").artifact_uri)
        conn.execute("DELETE FROM items WHERE sku = 'NEW-1'")
        conn.execute("DELETE FROM item_vectors WHERE sku = 'NEW-1'")
    skus = json.loads((folder / "skus.json").read_text())
    categories = json.loads((folder / "categories.json").read_text())
    model_cfg = TwoTowerConfig.from_dict(json.loads((folder / "config.json").read_text()) | {"device": "cpu"})
    model = build_model(model_cfg, load_item_features(folder / "item_features.npz"), None)
    model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    model.eval()
    index = {s: i for i, s in enumerate(skus)}
    tower = model.item_tower
    content = torch.as_tensor(encode_texts(["A brand-new protective case"]))
    with torch.no_grad():
        expected = tower.encode(torch.zeros(1, dtype=torch.long), content=content,
                                cats=torch.tensor([[categories.index(category), 2]]),
                                numeric=torch.tensor([[0.5]]),
                                nbrs=torch.tensor([[index[device] + 1] + [0] * 7]))[0].numpy()
    assert np.abs(got - expected).max() < 1e-4


def test_incremental_cf_folds_in_new_users_and_skus(head):
    import json
    from datetime import datetime, timezone
    from pathlib import Path

    import numpy as np

    from recsys.train import incremental

    cfg, _ = head
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        base = registry.live(conn, "als")
        skus = [r[0] for r in conn.execute("SELECT sku FROM items ORDER BY sku LIMIT 3")]
        conn.execute("INSERT INTO items (sku, title, category, stock) VALUES ('NEW-2', 'A new cable', 'cable', 5)")
        now = datetime.now(timezone.utc)
        rows = [(f"inc-{i}", "product_viewed", "inc-user", sku, now) for i, sku in enumerate(skus + ["NEW-2"])]
        conn.cursor().executemany("INSERT INTO events (event_id, type, user_id, sku, ts) VALUES (%s, %s, %s, %s, %s)",
                                  rows)
        message = incremental.run(cfg)
        live = registry.live(conn, "als")
        conn.execute("DELETE FROM events WHERE user_id = 'inc-user'")
        conn.execute("DELETE FROM items WHERE sku = 'NEW-2'")
    assert live.version != base.version and live.metrics["base"] == base.version and "1 new SKUs" in message
    # it went live through the ALS gates, whose report is stored beside its metrics
    names = {c["name"] for c in live.gates["checks"]}
    assert live.gates["passed"] and {"als.ndcg@12 >= floor", "als.finite_factors >= floor"} <= names
    data = np.load(live.artifact_uri)
    users = list(data["users"])
    item_ids = json.loads((Path(live.artifact_uri).parent / "skus.json").read_text())
    assert "inc-user" in users and item_ids[-1] == "NEW-2"
    assert np.abs(data["user_factors"][users.index("inc-user")]).sum() > 0
    assert np.abs(data["item_factors"][-1]).sum() > 0


def test_serving_retrieves_with_the_live_two_tower_and_als(head):
    """After the job: known users get ANN candidates from their vector, new visitors from a cohort
    centroid; a user's new views recompute the vector with the ONNX user tower; ALS folds users in."""
    from recsys.features.online_store import UserState
    from recsys.serve.model_sources import ALSSource, TwoTowerANN
    from recsys.serve.request import RecRequest
    from recsys.serve.resources import Resources

    cfg, _ = head
    res = Resources(cfg)
    two_tower, als = TwoTowerANN(res), ALSSource(res)
    with psycopg.connect(Postgres(cfg).dsn) as conn:
        user = conn.execute("SELECT user_id FROM events WHERE user_id ~ '^u[0-9]+$' ORDER BY ts DESC LIMIT 1").fetchone()[0]
    state = res.store.user_state(user)
    found = two_tower.fetch(RecRequest(surface="homepage_hero", user_id=user), state, 50)
    assert len(found) == 50 and found[0].reasons == ["for you"]
    cold = two_tower.fetch(RecRequest(surface="homepage_hero", user_id="brand-new", device="mobile"),
                           UserState(user_id="brand-new"), 20)
    assert len(cold) == 20 and cold[0].reasons[0].startswith("popular with shoppers like you")
    live = res.models_for(res.release.live.models)                 # the live arm's models, loaded at start
    assert live.version == registry.live(psycopg.connect(Postgres(cfg).dsn), "two_tower").version
    views = [(sku, time.time() - 60 * i) for i, sku in enumerate(list(live.two_tower.index)[:5])]
    fresh_user = f"tt-{time.time_ns()}"
    newcomer = UserState(user_id=fresh_user, views=views, last_seen=time.time())
    assert two_tower.fetch(RecRequest(surface="homepage_hero", user_id=fresh_user), newcomer, 10)[0].reasons == ["for you"]
    res.writes.flush()                                                                  # written behind the response
    assert two_tower.store.get_user(fresh_user, live.version) is not None
    assert len(als.fetch(RecRequest(surface="homepage_hero", user_id=user), state, 30)) == 30
    assert len(als.fetch(RecRequest(surface="homepage_hero", user_id=fresh_user), newcomer, 30)) == 30


def test_ranker_lists_carry_the_live_models_scores_from_before_them(head):
    """Out-of-time scoring (recsys/rank/out_of_time.py): the ranker's lists come only from requests after
    the live models' training data, carry both models' scores, and score a request as serving does."""
    import numpy as np
    from omegaconf import OmegaConf

    from recsys.features.online_store import UserState
    from recsys.rank import out_of_time
    from recsys.rank.features import SCORE_COLUMNS, ItemTable
    from recsys.rank.offline import EventLog, build_lists
    from recsys.rank.train import read_log
    from recsys.release.arms import Arm
    from recsys.serve.model_sources import ALSSource
    from recsys.serve.request import RecRequest
    from recsys.serve.resources import Resources

    cfg, _ = head
    cfg = cfg.copy()
    OmegaConf.update(cfg, "ranker.max_requests", 500)
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        items, events = ItemTable.from_postgres(conn), read_log(conn)
        oot, why = out_of_time.from_registry(conn, cfg.ranker.out_of_time, items)
        tt, als = registry.live(conn, "two_tower"), registry.live(conn, "als")
    assert oot is not None, why
    # the incremental ALS of the test above saw everything: its base stands for it
    assert oot.versions == {"two_tower": tt.version, "als": als.metrics.get("base", als.version)}
    assert oot.since == tt.metrics["trained_until"] < events["ts"].max().timestamp()
    lists = build_lists(events, items, cfg.features, cfg.ranker, scorers=oot.scorers, since=oot.since,
                        valid_days=float(cfg.ranker.out_of_time.valid_days))
    assert len(lists.group) > 30 and (lists.meta["t"] >= oot.since).all()
    assert lists.meta["valid"].any() and not lists.meta["valid"].all()
    for column in ("score_two_tower", "score_als"):
        filled = np.isfinite(lists.source_scores[:, SCORE_COLUMNS.index(column)])
        assert filled.mean() > 0.1, column

    # One request with a history, scored offline and by the serving path's models.
    log = EventLog(events, items, cfg.features)
    meta = lists.meta
    row = next(i for i in range(len(meta)) if log.user_state(meta.at[i, "user_id"], meta.at[i, "t"]).views)
    t = float(meta.at[row, "t"])
    state = log.user_state(meta.at[row, "user_id"], t)
    res = Resources(cfg)
    models = res.models_for({"two_tower": tt.version, "als": oot.versions["als"]})
    offline = oot.scorers["two_tower"](state, [], t)
    served = models.items.search(models.two_tower.user_vector(state.views, t), 20)
    np.testing.assert_allclose([offline[items.index[s]] for s, _ in served], [v for _, v in served], rtol=1e-4,
                               atol=1e-5)
    newcomer = UserState(user_id=f"oot-{time.time_ns()}", views=state.views)   # ALS folds a stranger in
    page = [meta.at[row, "page_sku"]] if meta.at[row, "page_sku"] else []
    offline = oot.scorers["als"](newcomer, page, t)
    arm = Arm("control", {"two_tower": tt.version, "als": oot.versions["als"]})   # the scorer's ALS, not the fold-in's
    served = ALSSource(res).fetch(RecRequest(surface="pdp_fbt" if page else "homepage_hero", user_id=newcomer.user_id,
                                             skus=page, arm=arm), newcomer, 20)
    assert served
    np.testing.assert_allclose([offline[items.index[c.sku]] for c in served], [c.score for c in served], rtol=1e-4,
                               atol=1e-5)


def test_the_served_home_rail_offline_with_long_tail_slots(head):
    """recsys.rank.served after a ranker trained on out-of-time lists: the home rail through retrieval,
    the ranker and the slot stage, on the last days of the log, with and without the long-tail slots."""
    from omegaconf import OmegaConf

    from recsys.rank import served
    from recsys.rank.train import run

    cfg, _ = head
    cfg = cfg.copy()
    for key, value in {"ranker.max_requests": 800, "ranker.lightgbm.num_boost_round": 40, "ranker.mlp.epochs": 1,
                       "ranker.xgboost.num_boost_round": 5, "ranker.promote": False,
                       "bench.served.max_users": 300}.items():
        OmegaConf.update(cfg, key, value)
    trained = run(cfg)
    assert trained["out_of_time_scores"] and trained["two_tower_scores"] > 0 and trained["als_scores"] > 0
    result = served.evaluate(cfg, ranker_version=trained["version"])
    assert result["ranker_version"] == trained["version"] and result["requests"] >= 30
    for order in served.ORDERS:
        assert 0 <= result[f"{order}.ndcg@12"] <= 1
    # the long-tail slots (3 on the home rail) only add tail; on this 600-SKU world the rails hold some anyway
    assert result["served.long_tail_share@12"] >= max(3 / 12, result["served_no_tail.long_tail_share@12"]), result
    assert result["served.coverage@12"] >= result["served_no_tail.coverage@12"], result
    assert set(served.figures(result)) >= {"synthetic.served.ndcg@12", "synthetic.served.coverage@12",
                                           "synthetic.served.long_tail_share@12"}
