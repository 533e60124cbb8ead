"""The canary over HTTP and the command line: `GET /v1/admin/canary` for role ml only; advance and
roll back by hand, each audited under the key's identity; `recsys canary status` and `recsys models
gates` print the same state from Postgres."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from fastapi.testclient import TestClient

from recsys import registry
from recsys.release import canary as canaries
from recsys.release.promote import release
from tests.conftest import PATIENT, TEST_OVERRIDES, live_restored, make_cfg


@pytest.fixture(scope="module")
def setup(world):
    from recsys.auth import create_key
    from recsys.serve.api import api, set_recommender
    from recsys.serve.recommender import Recommender
    from recsys.services import Postgres

    cfg = make_cfg("release.canary.enabled=true", *PATIENT)
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as pg, live_restored(pg, "ranker"):
        keys = {role: {"Authorization": f"Bearer {create_key(pg, role, 'test_canary_api')[1]}"}
                for role in ("ml", "storefront", "viewer")}
        versions = []
        for _ in range(2):
            version = f"ranker-api-{uuid.uuid4().hex[:8]}"
            registry.register(pg, version, "ranker", "/nonexistent", {"type": "popularity"},
                              {"lightgbm_ndcg@12": 0.5, "retrieval_order_ndcg@12": 0.1})
            versions.append(version)
        assert release(pg, cfg, {"ranker": versions[0]}, "test", canary_allowed=False).action == "live"
        recommender = Recommender(cfg)
        set_recommender(recommender)
        with TestClient(api) as client:
            yield cfg, client, keys, versions, recommender


def test_only_the_ml_role_sees_and_moves_the_canary(setup):
    cfg, client, keys, versions, _ = setup
    assert client.get("/v1/admin/canary").status_code == 401
    assert client.get("/v1/admin/canary", headers=keys["storefront"]).status_code == 403
    assert client.post("/v1/admin/canary/advance", headers=keys["storefront"]).status_code == 403
    r = client.get(f"/v1/admin/models/{versions[0]}", headers=keys["ml"])
    assert r.status_code == 200 and r.json()["stage"] == "live" and r.json()["gates"]["passed"]


def test_a_viewer_reads_the_registry_and_the_canary_and_moves_nothing(setup):
    cfg, client, keys, versions, _ = setup
    assert client.get("/v1/admin/canary", headers=keys["viewer"]).status_code == 200
    assert client.get("/v1/admin/models", headers=keys["viewer"]).status_code == 200
    assert client.post("/v1/admin/canary/advance", headers=keys["viewer"]).status_code == 403
    assert client.post(f"/v1/admin/models/{versions[1]}/release", headers=keys["viewer"]).status_code == 403


def test_release_by_hand_gates_the_version_then_starts_its_canary(setup):
    from recsys.services import Postgres

    cfg, client, keys, versions, recommender = setup
    assert client.post("/v1/admin/models/no-such-version/release", headers=keys["ml"]).status_code == 404
    assert client.post(f"/v1/admin/models/{versions[0]}/release", headers=keys["ml"]).status_code == 409   # live
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as pg:
        worse = f"ranker-api-{uuid.uuid4().hex[:8]}"   # below the retrieval order it re-ranks: refused
        registry.register(pg, worse, "ranker", "/nonexistent", {"type": "popularity"},
                          {"lightgbm_ndcg@12": 0.05, "retrieval_order_ndcg@12": 0.1})
        good = f"ranker-api-{uuid.uuid4().hex[:8]}"
        registry.register(pg, good, "ranker", "/nonexistent", {"type": "popularity"},
                          {"lightgbm_ndcg@12": 0.5, "retrieval_order_ndcg@12": 0.1})
        r = client.post(f"/v1/admin/models/{worse}/release", headers=keys["ml"])
        assert r.status_code == 409 and r.json()["detail"]["action"] == "rejected"
        assert registry.get(pg, worse).stage == "rejected"
        r = client.post(f"/v1/admin/models/{good}/release", headers=keys["ml"])
        assert r.status_code == 200 and r.json()["action"] == "canary", r.json()
        assert r.json()["gates"][0]["passed"] and registry.get(pg, good).stage == "canary"
        running = canaries.running(pg)
        assert running.candidate == {"ranker": good} and running.canary_id == r.json()["canary_id"]
        canaries.abort(pg, running.canary_id, "test", "cleanup")


def test_advance_and_rollback_by_hand_are_audited_and_served(setup, capsys):
    from recsys.cli import main
    from recsys.services import Postgres

    cfg, client, keys, versions, recommender = setup
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as pg:
        started = release(pg, cfg, {"ranker": versions[1]}, "test")
    assert started.action == "canary"
    recommender.res.poll_release()
    body = client.get("/v1/admin/canary", headers=keys["ml"]).json()
    assert body["serving"]["canary"]["canary_models"]["ranker"] == versions[1]
    assert body["canary"]["state"] == "running" and body["canary"]["share"] == pytest.approx(0.1)
    assert body["canary"]["candidate"] == {"ranker": versions[1]} and body["canary"]["control"]["ranker"] == versions[0]
    assert set(body["numbers"]["since_start"]) == {"control", "canary"} and body["numbers"]["test"]["reject"] is False
    r = client.post("/v1/admin/canary/advance", headers=keys["ml"], json={"reason": "looks fine"})
    assert r.status_code == 200 and r.json()["stage"] == 1 and r.json()["share"] == pytest.approx(0.5)
    r = client.post("/v1/admin/canary/rollback", headers=keys["ml"], json={"reason": "changed our mind"})
    assert r.status_code == 200 and r.json()["state"] == "rolled_back"
    assert client.post("/v1/admin/canary/abort", headers=keys["ml"]).status_code == 404   # nothing runs
    log = client.get("/v1/admin/canary", headers=keys["ml"]).json()["log"]
    assert [e["action"] for e in log] == ["start", "advance", "rollback"]
    assert log[1]["actor"].startswith("key:") and "(ml" in log[1]["actor"] and "looks fine" in log[1]["reason"]

    assert main(["canary", "status", *TEST_OVERRIDES]) == 0
    out = capsys.readouterr().out
    assert f"canary {started.canary_id}: rolled_back" in out and "changed our mind" in out
    assert main(["models", "gates", versions[1], *TEST_OVERRIDES]) == 0
    assert "gates PASSED" in capsys.readouterr().out
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as pg:
        assert registry.get(pg, versions[1]).stage == "rejected" and canaries.running(pg) is None


def test_the_controller_actor_moves_a_canary_by_itself_and_comes_back_after_a_crash(setup):
    """The detached Ray actor ticks on its own: with no minimums, a canary goes 10% -> 50% -> 100% ->
    promoted while nobody calls anything; killed, Ray restarts it and it resumes."""
    import time

    import ray

    from recsys.release import controller
    from recsys.services import Postgres

    cfg = make_cfg("release.canary.enabled=true", "release.canary.min_impressions=0",
                   "release.canary.min_duration_s=0", "release.canary.controller_interval_s=0.5")
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as pg:
        live = registry.live(pg, "ranker")
        version = f"ranker-actor-{uuid.uuid4().hex[:8]}"
        registry.register(pg, version, "ranker", "/nonexistent", {"type": "popularity"}, live.metrics)
        print(controller.start_on_ray(cfg))
        try:
            actor = ray.get_actor(controller.ACTOR_NAME, namespace=controller.NAMESPACE)
            ray.kill(actor, no_restart=False)   # a crash: Ray restarts it (max_restarts=-1)
            started = release(pg, cfg, {"ranker": version}, "test")
            assert started.action == "canary"
            deadline = time.monotonic() + 60
            while canaries.get(pg, started.canary_id).state == "running" and time.monotonic() < deadline:
                time.sleep(0.5)
            assert canaries.get(pg, started.canary_id).state == "promoted"
            log = canaries.log(pg, started.canary_id)
            assert [e["action"] for e in log] == ["start", "advance", "advance", "promote"]
            assert {e["actor"] for e in log[1:]} == {"controller"}
        finally:
            assert controller.stop_on_ray(cfg)
            if (c := canaries.running(pg)) is not None:
                canaries.abort(pg, c.canary_id, "test", "test over")
        assert registry.live(pg, "ranker").version == version


def _serve(pg, canary_id: int, at, arm: str, impressions: int, clicked: int) -> None:
    """`impressions` of one arm at time `at`, the first `clicked` of them followed by a view from the rail."""
    from recsys.features.event_log import write_rows
    from recsys.features.impression_log import write_impressions

    ids = [f"hold-{canary_id}-{arm}-{uuid.uuid4().hex[:8]}" for _ in range(impressions)]
    write_impressions(pg, [{"request_id": r, "ts": at.timestamp(), "surface": "homepage_hero", "user_id": r,
                            "skus": ["S1"], "sources": ["trending"], "arm": arm, "canary_id": canary_id}
                           for r in ids])
    write_rows(pg, [(f"{r}-view", "product_viewed", r, None, "S1", at, None, None, None, None, None,
                     "homepage_hero", r, 0) for r in ids[:clicked]])


def test_a_canary_below_the_line_holds_its_stage_then_is_aborted_as_inconclusive(setup, capsys):
    """Enough impressions and time to advance, no significant drop, but the canary's CTR is below 0.97 x
    the control's: the controller holds the stage (it never advances a candidate that looks worse), and
    after max_stage_duration_s aborts the canary without a verdict. A canary above the line advances."""
    from datetime import timedelta

    from recsys.release.controller import tick
    from recsys.release.simulate import forget
    from recsys.services import Postgres

    cfg = make_cfg("release.canary.enabled=true", "release.canary.min_impressions=100",
                   "release.canary.min_duration_s=60", "release.canary.max_stage_duration_s=3600",
                   "release.canary.min_per_arm=100000")   # the test never decides: only the hold rule can
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as pg:
        live = registry.live(pg, "ranker")
        below, above = (f"ranker-hold-{uuid.uuid4().hex[:8]}" for _ in range(2))
        for version in (below, above):
            registry.register(pg, version, "ranker", "/nonexistent", {"type": "popularity"}, live.metrics)
        c = canaries.get(pg, release(pg, cfg, {"ranker": below}, "test").canary_id)
        try:
            _serve(pg, c.canary_id, c.started_at, "control", 400, 160)   # CTR 0.40
            _serve(pg, c.canary_id, c.started_at, "canary", 200, 60)     # CTR 0.30: 2.2 SE under 0.97 x 0.40
            held = tick(pg, now=c.started_at + timedelta(seconds=120))
            assert held.action == "hold" and "held" in held.reason and held.numbers["test"]["theta"] < 0
            assert canaries.get(pg, c.canary_id).stage == 0
            aborted = tick(pg, now=c.started_at + timedelta(seconds=3600))
            assert aborted.action == "abort" and aborted.reason.startswith("inconclusive")
            assert canaries.get(pg, c.canary_id).state == "aborted"
            assert registry.get(pg, below).stage == "candidate" and registry.live(pg, "ranker").version == live.version
            entry = canaries.log(pg, c.canary_id)[-1]
            assert entry["actor"] == "controller" and entry["numbers"]["since_start"]["canary"]["ctr"] == 0.30
            from recsys.cli import main

            capsys.readouterr()
            assert main(["canary", "status", *TEST_OVERRIDES]) == 0
            out = capsys.readouterr().out
            assert f"canary {c.canary_id}: aborted" in out and "controller: inconclusive" in out
            assert "(-2.2 standard errors)" in out and "a stage holds while theta < -0.5 standard errors" in out
        finally:
            forget(pg, c.canary_id)
        c = canaries.get(pg, release(pg, cfg, {"ranker": above}, "test").canary_id)
        try:
            _serve(pg, c.canary_id, c.started_at, "control", 400, 160)   # CTR 0.40
            _serve(pg, c.canary_id, c.started_at, "canary", 200, 80)     # CTR 0.40
            assert tick(pg, now=c.started_at + timedelta(seconds=120)).action == "advance"
        finally:
            canaries.abort(pg, c.canary_id, "test", "test over")
            forget(pg, c.canary_id)
