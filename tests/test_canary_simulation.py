"""The canary end to end on the small world: simulated shoppers meet the real serving code, which assigns
each one an arm; their clicks and orders are attributed to the impressions; the controller decides on
a simulated clock. A deliberately worse candidate (the least popular candidates first) is rolled back automatically within
a bounded number of impressions; a sound one (the same ranker retrained) goes 10% -> 50% -> 100% and is
promoted. The state survives a restart of everything that reads it."""

from __future__ import annotations

import uuid

import lightgbm as lgb
import numpy as np
import psycopg
import pytest

from recsys import registry
from recsys.release import canary as canaries
from recsys.release.promote import release
from recsys.release.simulate import forget, run_canary
from tests.conftest import PATIENT, live_restored, make_cfg

CANARY = ["release.canary.enabled=true", "release.canary.min_impressions=250", "release.canary.min_duration_s=600",
          "release.canary.min_per_arm=150", "serve.ranker=ltr", "surfaces.homepage_hero.cache_ttl_s=0", *PATIENT]
MAX_IMPRESSIONS = 6000


def _train_ranker(pg, tmp, cfg) -> str:
    """A LightGBM lambdarank ranker on the small world's lists (in process: Ray Train has its own test),
    registered with the metrics its gates read."""
    from recsys.models.ranker import LTRRanker
    from recsys.rank.evaluate import compare
    from recsys.rank.features import NAMES, ItemTable
    from recsys.rank.offline import build_lists
    from recsys.rank.train import read_log

    train, valid = build_lists(read_log(pg), ItemTable.from_postgres(pg), cfg.features, cfg.ranker).split()
    params = {"objective": "lambdarank", "metric": "ndcg", "eval_at": [12], "learning_rate": 0.05,
              "num_leaves": 31, "min_data_in_leaf": 20, "verbose": -1, "num_threads": 1, "seed": 0}
    booster = lgb.train(params, lgb.Dataset(train.X, train.y, group=train.group, feature_name=list(NAMES)),
                        num_boost_round=60)
    ranker = LTRRanker(booster)
    version = f"ranker-sim-{uuid.uuid4().hex[:8]}"
    ranker.save(tmp / version / "model.txt")
    registry.register(pg, version, "ranker", str(tmp / version), {}, compare(valid, {"lightgbm": ranker}, 12))
    return version


@pytest.fixture(scope="module")
def setup(world, tmp_path_factory):
    """The control (a LightGBM ranker, live), a sound candidate (the same, retrained) and the serving code;
    the live ranker as it was afterwards."""
    from recsys.services import Postgres

    cfg = make_cfg(*CANARY, "ranker.max_requests=1500")
    tmp = tmp_path_factory.mktemp("rankers")
    restored = psycopg.connect(Postgres(cfg).dsn, autocommit=True)
    with live_restored(restored, "ranker"):
        yield from _setup(cfg, tmp)
    restored.close()


def _setup(cfg, tmp):
    from recsys.data import history_end
    from recsys.serve.recommender import Recommender
    from recsys.services import Postgres
    from recsys.sim.catalog import generate_catalog
    from recsys.sim.shoppers import ShopperWorld

    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as pg:
        assert canaries.running(pg) is None
        control = _train_ranker(pg, tmp, cfg)
        assert release(pg, cfg, {"ranker": control}, "test setup", canary_allowed=False).action == "live"
        sound = _train_ranker(pg, tmp, cfg)
        worse = f"ranker-long-tail-{uuid.uuid4().hex[:8]}"
        # the least-viewed candidates first (a long-tail push gone too far), registered with the sound
        # one's offline numbers so that the gates pass: the canary is what catches it
        registry.register(pg, worse, "ranker", str(tmp), {"type": "popularity", "least_first": True},
                          registry.get(pg, sound).metrics)
    d = cfg.data
    shoppers = ShopperWorld(generate_catalog(n_skus=int(d.n_skus), seed=int(cfg.seed)), n_users=int(d.n_users),
                            seed=int(cfg.seed))
    shoppers.history(days=int(d.days), end=history_end(d.end))   # they own what they bought in the log
    recommender = Recommender(cfg)
    yield cfg, recommender, shoppers, {"control": control, "sound": sound, "worse": worse}
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as pg:
        if (c := canaries.running(pg)) is not None:
            canaries.abort(pg, c.canary_id, "test", "test over")
        # the simulated shoppers' events leave the shared log (later tests train and rebuild Redis from it)
        for (canary_id,) in pg.execute("SELECT DISTINCT canary_id FROM impressions WHERE canary_id IS NOT NULL"):
            forget(pg, canary_id)
        assert pg.execute("SELECT count(*) FROM events WHERE ts > now() + interval '1 minute'").fetchone()[0] == 0


def _canary(cfg, version: str) -> int:
    from recsys.services import Postgres

    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as pg:
        outcome = release(pg, cfg, {"ranker": version}, "test")
        assert outcome.action == "canary", outcome.line()
        return outcome.canary_id


def test_a_worse_candidate_is_rolled_back_automatically(setup):
    from recsys.services import Postgres

    cfg, recommender, shoppers, versions = setup
    canary_id = _canary(cfg, versions["worse"])
    recommender.res.poll_release()
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as pg:
        run = run_canary(pg, recommender, shoppers, canary_id, MAX_IMPRESSIONS, seed=1)
        assert run.outcome == "rolled_back", (run.impressions, run.final)
        assert run.impressions < MAX_IMPRESSIONS
        rollback = [d for d in run.decisions if d.action == "rollback"][-1]
        since = rollback.numbers["since_start"]
        assert since["canary"]["ctr"] < 0.97 * since["control"]["ctr"]
        assert rollback.numbers["test"]["likelihood_ratio"] >= 20
        # it never moved on while its CTR was clearly below the line (the controller holds such a stage)
        hold = float(cfg.release.canary.hold_below_se)
        assert all(d.numbers["test"]["theta"] >= -hold * d.numbers["test"]["std_error"]
                   for d in run.decisions if d.action in ("advance", "promote"))
        assert registry.get(pg, versions["worse"]).stage == "rejected"
        assert registry.live(pg, "ranker").version == versions["control"]
        log = canaries.log(pg, canary_id)
        assert [e["action"] for e in log][-1] == "rollback" and log[-1]["actor"] == "controller"
        # impressions carry the arm and the arm's versions
        arms = dict(pg.execute("SELECT arm, min(model_version) FROM impressions WHERE canary_id = %s GROUP BY arm",
                               (canary_id,)).fetchall())
        assert versions["worse"] in arms["canary"] and versions["control"] in arms["control"]
    recommender.res.poll_release()
    assert recommender.res.release.canary is None   # everyone is back on the control


def test_a_sound_candidate_goes_through_every_stage_to_live_and_the_state_survives_restarts(setup):
    from recsys.serve.recommender import Recommender
    from recsys.services import Postgres

    cfg, recommender, shoppers, versions = setup
    canary_id = _canary(cfg, versions["sound"])
    recommender.res.poll_release()
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as pg:
        run = run_canary(pg, recommender, shoppers, canary_id, 400, seed=2)   # part of the first stage
        assert run.outcome == "running" and canaries.get(pg, canary_id).stage == 0
    # a restart of every process: a new replica and a new controller connection find the same state
    fresh = Recommender(cfg)
    assert fresh.res.release.canary is not None and fresh.res.release.canary[1] == pytest.approx(0.1)
    users = [f"u{i:06d}" for i in range(400)]
    before = {u: recommender.res.release.arm_for(u, None, "r").name for u in users}
    assert {u: fresh.res.release.arm_for(u, None, "r").name for u in users} == before   # stable across replicas
    assert 0.03 < np.mean([a == "canary" for a in before.values()]) < 0.2
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as pg:
        run = run_canary(pg, fresh, shoppers, canary_id, MAX_IMPRESSIONS, seed=3)
        assert run.outcome == "promoted", (run.impressions, [d.reason for d in run.decisions])
        assert [d.action for d in run.decisions] == ["advance", "advance", "promote"]
        assert registry.live(pg, "ranker").version == versions["sound"]
        assert registry.get(pg, versions["control"]).stage == "retired"
        log = canaries.log(pg, canary_id)
        assert [e["action"] for e in log] == ["start", "advance", "advance", "promote"]
        assert all(e["numbers"]["test"]["reject"] is False for e in log[1:])
    # users in the canary at 10% stayed in it at 50%
    fresh.res.poll_release()
    assert fresh.res.release.canary is None and fresh.res.release.live.models["ranker"] == versions["sound"]
