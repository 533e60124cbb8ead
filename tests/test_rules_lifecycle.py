"""Rule set versions in the real Postgres (draft -> shadow -> live -> archived, rollback, audit,
immutability) and what an in-process recommender makes of them: the live set applies after a poll,
the response names it, a cached rail built under another set is never served, and the shadow set
runs beside live on a sampled request without changing it."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from recsys.rules import store
from recsys.rules.shadow import report
from recsys.serve.recommender import Recommender
from recsys.serve.request import RecRequest
from tests.conftest import PATIENT, make_cfg

ACTOR = "test:lifecycle"


def _body(name: str, *rules: dict) -> dict:
    return {"name": name, "rules": list(rules)}


def _pin(sku: str, slot: int = 1, rid: str = "pin") -> dict:
    return {"id": rid, "kind": "pin", "label": f"pin {sku}", "surfaces": ["homepage_hero"], "sku": sku, "slot": slot}


def _block_skus(skus: list[str], rid: str = "block") -> dict:
    return {"id": rid, "kind": "block", "label": "block", "surfaces": ["homepage_hero", "pdp_fbt", "cart_upsell"],
            "filter": {"field": "sku", "in": skus}}


@pytest.fixture
def clean_rules(pg):
    """No set live or in shadow before and after (the suite shares one Postgres)."""
    def retire():
        for state in ("live", "shadow"):
            current = store.in_state(pg, state)
            if current is not None:
                store.archive(pg, current.version, ACTOR)
    retire()
    yield pg
    retire()


def test_versions_move_through_their_states_one_live_at_a_time(clean_rules):
    pg = clean_rules
    first = store.create(pg, _body("first", _pin("E000001")), ACTOR)
    assert first.state == "draft"
    assert store.shadow(pg, first.version, ACTOR).state == "shadow"
    second = store.create(pg, _body("second", _pin("E000002")), ACTOR)
    store.shadow(pg, second.version, ACTOR)
    assert store.get(pg, first.version).state == "draft"   # one shadow at a time: the earlier one steps back
    assert store.publish(pg, first.version, ACTOR).state == "live"
    assert store.publish(pg, second.version, ACTOR).state == "live"
    assert store.get(pg, first.version).state == "archived"
    assert store.states(pg) == {"live": second.version}
    with pytest.raises(store.RuleSetError) as refused:
        store.publish(pg, first.version, ACTOR)            # archived: rollback is the way back
    assert refused.value.status == 409
    with pytest.raises(store.RuleSetError) as missing:
        store.get(pg, 10 ** 8)
    assert missing.value.status == 404


def test_rollback_restores_the_previous_live_version_and_everything_is_audited(clean_rules):
    pg = clean_rules
    with pytest.raises(store.RuleSetError, match="no rule set is live"):
        store.rollback(pg, ACTOR)
    a = store.create(pg, _body("a", _pin("E000001")), ACTOR)
    store.publish(pg, a.version, ACTOR)
    b = store.create(pg, _body("b", _pin("E000003", 2)), "test:someone-else")
    store.publish(pg, b.version, "test:someone-else")
    assert store.rollback(pg, ACTOR).version == a.version
    assert store.states(pg) == {"live": a.version}
    log = store.audit_log(pg, b.version)
    assert [e["action"] for e in log] == ["publish", "create"]
    assert log[1]["actor"] == "test:someone-else" and log[1]["detail"]["against"] == a.version
    assert {"op": "replace", "path": "/rules/0/sku", "value": "E000003"} in log[1]["detail"]["diff"]
    back = store.audit_log(pg, a.version)[0]
    assert back["action"] == "rollback" and back["detail"]["replaced"] == b.version and back["detail"]["diff"]


def test_a_version_is_immutable(clean_rules):
    pg = clean_rules
    v = store.create(pg, _body("frozen", _pin("E000001")), ACTOR)
    with pytest.raises(psycopg.errors.RaiseException, match="immutable"):
        pg.execute("UPDATE rule_sets SET body = '{}' WHERE version = %s", (v.version,))


@pytest.fixture(scope="module")
def recommender(world):
    return Recommender(make_cfg(*PATIENT, "rules.shadow.share=1.0", "rules.shadow.flush_s=0.1"))


def _rail(recommender, user: str, **kw) -> dict:
    body = recommender.recommend(RecRequest("homepage_hero", user_id=user, **kw))
    recommender.res.writes.flush()
    return body


def test_the_live_set_applies_after_a_poll_and_cached_rails_of_another_set_are_never_served(recommender, clean_rules):
    pg, res = clean_rules, recommender.res
    res.poll_rules()
    user = f"rules-{uuid.uuid4().hex[:8]}"
    before = _rail(recommender, user)
    assert before["rule_set_version"] is None
    assert _rail(recommender, user)["items"] == before["items"]          # cached
    pinned = next(s for s in sorted(res.catalog.in_stock) if s not in {i["sku"] for i in before["items"]})
    live = store.publish(pg, store.create(pg, _body("pin one", _pin(pinned)), ACTOR).version, ACTOR)
    res.poll_rules()   # the replica's timer does it within rules.poll_s; here at once
    after = _rail(recommender, user)
    assert after["rule_set_version"] == store.label(live.version)
    assert after["items"][0]["sku"] == pinned
    store.archive(pg, live.version, ACTOR)
    res.poll_rules()
    again = _rail(recommender, user)
    assert again["rule_set_version"] is None and again["items"][0]["sku"] != pinned


def test_explain_shows_what_each_rule_did(recommender, clean_rules):
    pg, res = clean_rules, recommender.res
    res.poll_rules()
    user = f"explain-{uuid.uuid4().hex[:8]}"
    plain = _rail(recommender, user, explain=True)
    top = plain["items"][0]["sku"]
    live = store.create(pg, _body("explained", _block_skus([top]), _pin(plain["items"][5]["sku"], 1, "lead")), ACTOR)
    store.publish(pg, live.version, ACTOR)
    res.poll_rules()
    body = _rail(recommender, user, explain=True)
    assert body["rules"]["blocked"] == {top: "block"}
    assert body["rules"]["pins"] == {"lead": {"slot": 1, "honoured": True}}
    assert body["items"][0]["explain"]["rules"] == ["lead: pinned at slot 1"]
    assert top not in {i["sku"] for i in body["items"]}


def test_the_shadow_set_runs_beside_live_without_changing_it_and_reports(recommender, clean_rules):
    pg, res = clean_rules, recommender.res
    res.poll_rules()
    users = [f"shadow-{uuid.uuid4().hex[:8]}-{i}" for i in range(20)]
    live_rails = {u: _rail(recommender, u, explain=True)["items"] for u in users}   # explain: never cached
    top = sorted({rail[0]["sku"] for rail in live_rails.values()})
    shadow = store.create(pg, _body("shadow", _block_skus(top), _pin(live_rails[users[0]][7]["sku"], 1, "lead")), ACTOR)
    store.shadow(pg, shadow.version, ACTOR)
    res.poll_rules()
    assert res.rules.shadow is not None and res.rules.live is None
    for u in users:   # share 1.0 in this module: every request runs the shadow set too
        body = _rail(recommender, u, explain=True)
        assert [i["sku"] for i in body["items"]] == [i["sku"] for i in live_rails[u]]
        assert body["rule_set_version"] is None
    assert recommender.shadow.wait_idle(20)
    got = report(pg, shadow.version, len(res.catalog.items))
    assert got["runs"] == len(users)
    assert got["blocked_removed"] >= len(users)                 # each live rail's first item is blocked in shadow
    assert got["overlap_at_k"] < 1.0 and got["pins"]["applied"] == len(users)
    assert got["surfaces"]["homepage_hero"]["runs"] == len(users)
    assert got["margin"]["live"] is not None and got["extra_ms"]["shadow_p95"] > 0


def test_a_replica_switches_sets_without_any_request(world, clean_rules):
    """Polling runs on a timer, not on requests: a replica answering only cache hits (which skip the
    pipeline) must switch sets too — the demo's repeated request once never saw its publish."""
    pg = clean_rules
    quiet = Recommender(make_cfg(*PATIENT, "rules.poll_s=0.2"))
    assert quiet.res.rules.live_version is None
    live = store.publish(pg, store.create(pg, _body("timer", _pin("E000001")), ACTOR).version, ACTOR)
    deadline = time.monotonic() + 5
    while quiet.res.rules.live_version != store.label(live.version) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert quiet.res.rules.live_version == store.label(live.version)
