"""Keys, roles and rate limits (recsys/auth) through the FastAPI app in-process, against the suite's
real Postgres, Redis and broker; and the event producer's per-request acknowledgement."""

import hashlib
import json
import os
import socket
import stat
import time
import uuid
from contextlib import contextmanager

import psycopg
import pytest
import redis
from fastapi.testclient import TestClient

from recsys.auth import ROLES, create_key, find_key, list_keys, revoke_key
from recsys.serve.api import api, set_recommender
from recsys.serve.recommender import Recommender
from tests.conftest import PATIENT, PREFIX, TEST_OVERRIDES, make_cfg



def dead_address() -> str:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@contextmanager
def client_for(*overrides: str, recommender: Recommender | None = None):
    recommender = recommender or Recommender(make_cfg(*PATIENT, *overrides))
    set_recommender(recommender)
    with TestClient(api) as c:
        c.recommender = recommender
        yield c


@pytest.fixture(scope="module")
def client(world):
    with client_for() as c:
        yield c


@pytest.fixture(scope="module")
def keys(world):
    """A fresh key of each role: {role: clear key}."""
    from recsys.services import Postgres

    with psycopg.connect(Postgres(world).dsn, autocommit=True) as conn:
        return {role: create_key(conn, role, f"test_auth {role}")[1] for role in ROLES}


@pytest.fixture(scope="module")
def sku(world):
    from recsys.services import Postgres

    with psycopg.connect(Postgres(world).dsn) as conn:
        return conn.execute("SELECT sku FROM items ORDER BY sku LIMIT 1").fetchone()[0]


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def event(sku: str, **extra) -> dict:
    return {"type": "product_viewed", "user_id": f"auth-{uuid.uuid4().hex[:8]}", "sku": sku, **extra}


def test_keys_are_stored_hashed_listed_and_revoked(pg):
    record, key = create_key(pg, "merchandiser", "hashing test")
    assert key.startswith("rk_merchandiser_") and len(key) > 50
    assert key.startswith(record.prefix) and len(record.prefix) < len(key) - 30
    rows = [r[0] for r in pg.execute("SELECT t::text FROM api_keys t")]
    assert not any(key in row or key[len(record.prefix):] in row for row in rows)   # never in clear
    stored = pg.execute("SELECT hash FROM api_keys WHERE key_id = %s", (record.key_id,)).fetchone()[0]
    assert stored == hashlib.sha256(key.encode()).hexdigest()
    assert find_key(pg, key) == record and find_key(pg, key + "x") is None
    assert record.key_id in {k.key_id for k in list_keys(pg, include_revoked=False)}

    revoked = revoke_key(pg, record.prefix)
    assert revoked.key_id == record.key_id and revoked.revoked_at is not None
    assert not find_key(pg, key).active
    assert record.key_id not in {k.key_id for k in list_keys(pg, include_revoked=False)}
    assert revoke_key(pg, str(record.key_id)).revoked_at == revoked.revoked_at     # idempotent
    with pytest.raises(LookupError):
        revoke_key(pg, "rk_storefront_nosuchkey")
    with pytest.raises(ValueError):
        create_key(pg, "root")
    with pytest.raises(psycopg.errors.CheckViolation):
        pg.execute("INSERT INTO api_keys (prefix, hash, role) VALUES ('x', 'y', 'root')")


def test_cli_creates_lists_and_revokes(stack, capsys):
    from recsys.cli import main

    assert main(["keys", "create", "--role", "ml", "--name", "cli test", *TEST_OVERRIDES]) == 0
    out = capsys.readouterr().out
    key = next(line for line in out.splitlines() if line.startswith("rk_ml_"))
    prefix = out.split("prefix ")[1].split()[0]
    assert main(["keys", "list", *TEST_OVERRIDES]) == 0
    listed = capsys.readouterr().out
    assert prefix in listed and key not in listed and "cli test" in listed
    assert main(["keys", "revoke", prefix, *TEST_OVERRIDES]) == 0
    assert "revoked" in capsys.readouterr().out
    from recsys.services import Postgres

    with psycopg.connect(Postgres(stack).dsn) as conn:
        assert not find_key(conn, key).active
    assert main(["keys", "revoke", "rk_ml_nosuchkey", *TEST_OVERRIDES]) == 1


def test_events_need_a_storefront_or_admin_key(client, keys, sku):
    r = client.post("/v1/events", json=event(sku))
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = client.post("/v1/events", json=event(sku), headers=bearer("rk_storefront_" + "x" * 43))
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.post("/v1/events", json=event(sku), headers={"Authorization": "Basic Zm9vOmJhcg=="}).status_code == 401
    for role in ("merchandiser", "ml"):
        r = client.post("/v1/events", json=event(sku), headers=bearer(keys[role]))
        assert r.status_code == 403 and "storefront" in r.json()["detail"]
    for headers in (bearer(keys["storefront"]), {"X-API-Key": keys["storefront"]}, bearer(keys["admin"])):
        r = client.post("/v1/events", json=event(sku), headers=headers)
        assert r.status_code == 202 and r.json()["accepted"] == 1, r.text


def test_openapi_declares_the_security_schemes(client):
    doc = client.get("/openapi.json").json()
    assert {"HTTPBearer", "APIKeyHeader"} <= set(doc["components"]["securitySchemes"])
    assert doc["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    for path, method in (("/v1/events", "post"), ("/v1/admin/keys", "get"), ("/v1/admin/keys", "post"),
                         ("/v1/admin/keys/{key_id_or_prefix}", "delete")):
        assert doc["paths"][path][method]["security"], (path, method)


def test_admin_endpoints_need_an_admin_key(client, keys, sku):
    calls = [("get", "/v1/admin/keys", None), ("post", "/v1/admin/keys", {"role": "storefront"}),
             ("delete", "/v1/admin/keys/1", None)]
    for method, path, body in calls:
        kwargs = {"json": body} if body else {}
        assert client.request(method, path, **kwargs).status_code == 401, path
        for role in ("storefront", "merchandiser", "ml"):
            assert client.request(method, path, headers=bearer(keys[role]), **kwargs).status_code == 403, (path, role)
    admin = bearer(keys["admin"])

    r = client.post("/v1/admin/keys", json={"role": "storefront", "name": "made by admin"}, headers=admin)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["key"].startswith(made["prefix"]) and made["role"] == "storefront"
    assert client.post("/v1/events", json=event(sku), headers=bearer(made["key"])).status_code == 202
    listed = client.get("/v1/admin/keys", headers=admin).json()
    mine = [k for k in listed if k["key_id"] == made["key_id"]]
    assert mine and mine[0]["prefix"] == made["prefix"] and "key" not in mine[0] and "hash" not in mine[0]
    assert made["key"] not in json.dumps(listed)

    r = client.delete(f"/v1/admin/keys/{made['prefix']}", headers=admin)
    assert r.status_code == 200 and r.json()["revoked_at"]
    # revoked through this replica: refused at once, not only after the cache TTL
    assert client.post("/v1/events", json=event(sku), headers=bearer(made["key"])).status_code == 401
    assert client.delete("/v1/admin/keys/rk_storefront_nosuchkey", headers=admin).status_code == 404
    assert client.post("/v1/admin/keys", json={"role": "root"}, headers=admin).status_code == 422


def test_a_revoked_key_stops_working_after_the_cache_ttl(world, sku):
    from recsys.services import Postgres

    ttl = 2.0
    with psycopg.connect(Postgres(world).dsn, autocommit=True) as conn, client_for(f"auth.cache_ttl_s={ttl}") as c:
        record, key = create_key(conn, "storefront", "ttl test")
        assert c.post("/v1/events", json=event(sku), headers=bearer(key)).status_code == 202
        revoke_key(conn, str(record.key_id))      # elsewhere: this replica's cache still holds the key
        revoked_at = time.monotonic()
        r = c.post("/v1/events", json=event(sku), headers=bearer(key))
        if time.monotonic() - revoked_at < ttl * 0.8:
            assert r.status_code == 202           # served from the cache: Postgres not asked
        time.sleep(ttl + 0.2)
        r = c.post("/v1/events", json=event(sku), headers=bearer(key))
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_rate_limit_per_key_counts_events_and_recovers(world, sku):
    from recsys.services import Postgres

    with psycopg.connect(Postgres(world).dsn, autocommit=True) as conn:
        (first, key), (_, other) = create_key(conn, "storefront"), create_key(conn, "storefront")
    with client_for("auth.events_per_s_per_key=5", "auth.burst=10") as c:
        assert c.post("/v1/events", json=[event(sku) for _ in range(10)], headers=bearer(key)).status_code == 202
        r = c.post("/v1/events", json=event(sku), headers=bearer(key))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert c.post("/v1/events", json=event(sku), headers=bearer(other)).status_code == 202   # its own bucket
        bucket = f"{PREFIX}ratelimit:{first.key_id}"
        assert redis.Redis.from_url(world.services.redis.url).exists(bucket)   # under the suite's prefix
        time.sleep(int(r.headers["retry-after"]))
        assert c.post("/v1/events", json=event(sku), headers=bearer(key)).status_code == 202
        # a batch larger than the burst passes from a full bucket, then the key waits it off
        time.sleep(2.2)   # the bucket refills (10 tokens at 5/s)
        assert c.post("/v1/events", json=[event(sku) for _ in range(20)], headers=bearer(other)).status_code == 202
        r = c.post("/v1/events", json=event(sku), headers=bearer(other))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 2   # 11 events of debt at 5/s


def test_rate_limit_fails_open_without_redis(world, keys, sku):
    with client_for(f"services.redis.url=redis://{dead_address()}/0", "auth.events_per_s_per_key=1",
                    "auth.burst=1") as c:
        for _ in range(3):
            r = c.post("/v1/events", json=[event(sku), event(sku)], headers=bearer(keys["storefront"]))
            assert r.status_code == 202, r.text


def test_recommendations_are_public_or_keyed_by_configuration(client, keys):
    assert client.get("/v1/recommendations/homepage_hero", params={"user_id": "anyone"}).status_code == 200
    with client_for("auth.public_recommendations=false") as c:
        r = c.get("/v1/recommendations/homepage_hero", params={"user_id": "anyone"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        for role, status in (("merchandiser", 403), ("ml", 403), ("storefront", 200), ("admin", 200)):
            r = c.get("/v1/recommendations/homepage_hero", params={"user_id": "anyone"}, headers=bearer(keys[role]))
            assert r.status_code == status, (role, r.text)


def test_postgres_outage_keeps_cached_keys_and_answers_503_for_others(world, sku):
    from psycopg_pool import ConnectionPool

    from recsys.services import Postgres

    with psycopg.connect(Postgres(world).dsn, autocommit=True) as conn:
        cached, uncached = create_key(conn, "storefront")[1], create_key(conn, "storefront")[1]
    with client_for("auth.cache_ttl_s=0.2") as c:
        res = c.recommender.res
        assert c.post("/v1/events", json=event(sku), headers=bearer(cached)).status_code == 202
        healthy, res.pool = res.pool, ConnectionPool(f"postgresql://postgres@{dead_address()}/none", min_size=0, max_size=1,
                                                     open=True, timeout=1, kwargs={"connect_timeout": 1})
        try:
            time.sleep(0.3)   # past the TTL: the stale entry is all there is
            r = c.post("/v1/events", json=event(sku), headers=bearer(cached))
            assert r.status_code == 202, r.text
            start = time.monotonic()
            r = c.post("/v1/events", json=event(sku), headers=bearer(uncached))
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
            assert time.monotonic() - start < 5
        finally:
            res.pool.close()
            res.pool = healthy


def test_admin_endpoints_answer_503_not_500_while_postgres_is_down(world, keys):
    from psycopg_pool import ConnectionPool

    with client_for("auth.cache_ttl_s=60") as c:
        assert c.get("/v1/admin/keys", headers=bearer(keys["admin"])).status_code == 200   # the key is cached
        res = c.recommender.res
        healthy, res.pool = res.pool, ConnectionPool(f"postgresql://postgres@{dead_address()}/none", min_size=0,
                                                     max_size=1, open=True, timeout=1, kwargs={"connect_timeout": 1})
        try:
            r = c.get("/v1/admin/keys", headers=bearer(keys["admin"]))
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1, r.text
        finally:
            res.pool.close()
            res.pool = healthy


def test_a_dead_broker_answers_503_with_retry_after_within_the_ack_timeout(world, keys, sku):
    with client_for(f"services.kafka.bootstrap={dead_address()}") as c:
        sent = event(sku, event_id=f"retry-me-{uuid.uuid4().hex}")
        for _ in range(2):   # the second while the first's message may still sit in the queue
            start = time.monotonic()
            r = c.post("/v1/events", json=sent, headers=bearer(keys["storefront"]))
            took = time.monotonic() - start
            assert r.status_code == 503, r.text
            assert int(r.headers["retry-after"]) >= 1 and r.json()["event_ids"] == [sent["event_id"]]
            assert took < float(world.features.intake.ack_timeout_s) + 0.6, took


def test_an_impression_backlog_never_delays_event_acks(world, keys, sku):
    from recsys.features.broker import EventProducer

    with client_for() as c:
        res = c.recommender.res
        assert res.impression_producer() is not res.event_producer()
        res.impressions = EventProducer(dead_address(), world.services.kafka.topics)   # impressions go nowhere
        for i in range(5):
            assert c.get("/v1/recommendations/homepage_hero", params={"user_id": f"imp-{i}"}).status_code == 200
        for i in range(20_000):
            res.impressions.send_impressions([{"user_id": f"backlog-{i}", "skus": [sku] * 12}])
        assert len(res.impressions._producer) > 5_000   # a real backlog, waiting on a dead broker
        start = time.monotonic()
        r = c.post("/v1/events", json=[event(sku) for _ in range(5)], headers=bearer(keys["storefront"]))
        assert r.status_code == 202 and r.json()["accepted"] == 5, r.text
        assert time.monotonic() - start < 1.5
        res.impressions._producer.purge()


def test_demo_keys_are_one_per_role_private_and_reused(stack):
    from pathlib import Path

    from recsys.demo import ensure_demo_keys
    from recsys.services import Postgres

    cfg = stack   # the suite's own state_dir (it also holds the Postgres password)
    (Path(cfg.state_dir) / "api-keys.json").unlink(missing_ok=True)
    path, first = ensure_demo_keys(cfg)
    assert path == Path(cfg.state_dir) / "api-keys.json" and set(first) == set(ROLES)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text()) == first
    with psycopg.connect(Postgres(stack).dsn, autocommit=True) as conn:
        assert all(find_key(conn, key).role == role for role, key in first.items())
        assert ensure_demo_keys(cfg)[1] == first                       # idempotent
        revoke_key(conn, str(find_key(conn, first["storefront"]).key_id))
        again = ensure_demo_keys(cfg)[1]
        assert again["storefront"] != first["storefront"] and find_key(conn, again["storefront"]).active
        assert {r: k for r, k in again.items() if r != "storefront"} == {
            r: k for r, k in first.items() if r != "storefront"}


def test_an_acknowledgement_waits_for_its_own_messages_only(stack):
    """A request's wait ends with its own deliveries, while other requests' messages are still queued
    (a Producer.flush() would wait for the whole queue)."""
    import threading
    from types import SimpleNamespace

    from recsys.features.broker import EventProducer
    from recsys.services import Kafka

    tag = uuid.uuid4().hex[:8]
    topics = SimpleNamespace(events=f"test-auth-bulk-{tag}", dlq=f"test-auth-one-{tag}", impressions=f"test-auth-imp-{tag}")
    producer = EventProducer(Kafka(stack).bootstrap, topics)
    producer.send_dead_letters([{"reason": "warm-up", "user_id": "u"}])   # metadata and connection ready
    bulk = threading.Thread(target=producer._produce_all,
                            args=(((topics.events, f"u{i % 64}", b"x" * 200) for i in range(400_000)), 60))
    bulk.start()
    try:
        deadline = time.monotonic() + 30
        while len(producer._producer) < 20_000 and bulk.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert producer.send_dead_letters([{"reason": "mine", "user_id": "u"}], timeout=10) == 1
        assert len(producer._producer) > 0, "waited for the other request's messages too"
    finally:
        bulk.join(60)


def test_admin_text_is_printable_and_bounded(client, keys):
    """What the admin endpoints store must fit Postgres: a NUL is a 422, never a 500."""
    admin = bearer(keys["admin"])
    assert client.post("/v1/admin/keys", json={"role": "ml", "name": "a\x00b"}, headers=admin).status_code == 422
    assert client.post("/v1/admin/keys", json={"role": "ml", "name": "x" * 129}, headers=admin).status_code == 422
    assert client.delete("/v1/admin/keys/a%00b", headers=admin).status_code == 422
