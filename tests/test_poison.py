"""No input stops ingestion: poison through the real API and broker, isolation of a message a store
refuses, the dedupe marker set only after a successful write, and outages told apart from poison."""

import json
import time
import uuid

import psycopg
import pytest
import redis
from confluent_kafka import Producer
from fastapi.testclient import TestClient

from recsys.features.consumer import FeatureConsumer, is_poison
from recsys.features.events import Event
from recsys.services import Kafka
from tests.conftest import make_cfg
from tests.test_consumer import read_topic


@pytest.fixture
def topic_cfg(world):
    """Topics and a key prefix of this test's own, on the suite's broker."""
    tag = uuid.uuid4().hex[:8]
    cfg = make_cfg(f"services.kafka.topics.events=p.events.{tag}", f"services.kafka.topics.dlq=p.dlq.{tag}",
                   f"services.kafka.topics.impressions=p.impressions.{tag}",
                   f"services.redis.key_prefix={world.services.redis.key_prefix}p{tag}:",
                   "serve.max_body_bytes=65536")
    Kafka(cfg).create_topics()
    return cfg


@pytest.fixture
def skus(pg):
    return [r[0] for r in pg.execute("SELECT sku FROM items ORDER BY sku LIMIT 5")]


def consume_until(consumer: FeatureConsumer, done, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the consumer did not get there in time"
        consumer.poll_once(0.2)


def logged(pg, event_id: str) -> bool:
    return pg.execute("SELECT 1 FROM events WHERE event_id = %s", (event_id,)).fetchone() is not None


def test_poison_through_the_api_and_the_broker_never_stops_the_consumer(topic_cfg, pg, skus):
    from recsys.auth import create_key
    from recsys.serve.api import api, set_recommender
    from recsys.serve.recommender import Recommender

    cfg = topic_cfg
    _, key = create_key(pg, "storefront", "poison-test")
    auth = {"Authorization": f"Bearer {key}"}
    user = f"poison-{uuid.uuid4().hex[:6]}"
    ok = {"type": "product_viewed", "user_id": user, "sku": skus[0]}
    set_recommender(Recommender(cfg))
    with TestClient(api) as client:
        refused = {
            "NUL in user_id": ({**ok, "user_id": "a\x00b"}, "user_id"),
            "control character in session_id": ({**ok, "session_id": "s\x1b[2J"}, "session_id"),
            "price past numeric(12,2)": ({**ok, "type": "add_to_cart", "price": 1e12}, "price"),
            "year 1": ({**ok, "ts": "0001-01-01T00:00:00Z"}, "ts"),
            "far future": ({**ok, "ts": "2999-01-01T00:00:00Z"}, "ts"),
            "overlong sku": ({**ok, "sku": "E" * 65}, "sku"),
        }
        for name, (event, field) in refused.items():
            r = client.post("/v1/events", json=event, headers=auth)
            assert r.status_code == 422, (name, r.status_code, r.text)
            assert r.json()["rejected"][0]["reason"].startswith(f"{field}:"), (name, r.json())
        r = client.post("/v1/events", content=b"[" + b"1," * 40000 + b"1]", headers={**auth, "content-type": "application/json"})
        assert r.status_code == 413 and "bytes" in r.json()["detail"]
        for params, field in (({"user_id": "a\x00b"}, "user_id"), ({"session_id": "\x07"}, "session_id"),
                              ({"sku": ",".join(["E1"] * 51)}, "sku"), ({"sku": "E" * 65}, "sku"),
                              ({"cart": "C" * 5000}, "cart")):
            surface = "cart_upsell" if field == "cart" else "pdp_fbt" if field == "sku" else "homepage_hero"
            r = client.get(f"/v1/recommendations/{surface}", params=params)
            assert r.status_code == 422, (params, r.status_code)
            assert r.json()["detail"][0]["loc"] == ["query", field], r.json()

        # A producer that bypasses the API: the consumer's own validation and the stores' refusals.
        raw = Producer({"bootstrap.servers": Kafka(cfg).bootstrap})
        t = cfg.services.kafka.topics
        poison = [(t.events, json.dumps({**ok, "user_id": "a\x00b"}).encode()),
                  (t.events, json.dumps({**ok, "type": "add_to_cart", "price": 1e12}).encode()),
                  (t.events, json.dumps({**ok, "ts": "0001-01-01T00:00:00Z"}).encode()),
                  (t.events, b"\xff\xfe not text"),
                  (t.impressions, json.dumps({"request_id": "r-" + user, "ts": time.time(), "surface": "x",
                                              "user_id": "a\x00b", "skus": [], "sources": []}).encode()),
                  (t.impressions, b"[1, 2]")]
        for topic, value in poison:
            raw.produce(topic, key=user.encode(), value=value)
        raw.flush(10)

        good = {**ok, "event_id": f"good-{user}"}
        r = client.post("/v1/events", json=good, headers=auth)
        assert r.status_code == 202, r.text
        sent = time.monotonic()

    consumer = FeatureConsumer(cfg, group_id=f"g-{uuid.uuid4().hex}")
    try:
        consume_until(consumer, lambda: logged(pg, good["event_id"]) and consumer.store.user_state(user).known)
        assert time.monotonic() - sent < 15
        letters = pg.execute("SELECT reason, payload FROM dead_letters WHERE topic IN (%s, %s) ORDER BY letter_id",
                             (t.events, t.impressions)).fetchall()
    finally:
        consumer.close()
    assert len(letters) == len(poison), letters
    reasons = " | ".join(r for r, _ in letters)
    for expected in ("user_id: must be printable", "price:", "ts:", "not UTF-8", "not storable", "impression:"):
        assert expected in reasons, (expected, reasons)
    assert len(read_topic(cfg, t.dlq, len(poison) + 6)) == len(poison) + 6   # the API's 6 refusals too


def test_a_message_a_store_refuses_is_isolated_and_its_letter_never_duplicated(topic_cfg, pg, skus):
    """A value the schema accepts but Postgres refuses (a CHECK added for the test): the batch is split
    down to that message, every other event is stored, and replaying the batch adds no second letter."""
    cfg = topic_cfg
    user = f"iso-{uuid.uuid4().hex[:6]}"
    bad_order = f"poison-{user}"
    events = [Event(type="product_viewed", user_id=user, sku=skus[i % 5]) for i in range(20)]
    events.insert(13, Event(type="purchase_completed", user_id=user, sku=skus[0], order_id=bad_order))
    pg.execute(f"ALTER TABLE events ADD CONSTRAINT test_{user.replace('-', '_')} CHECK (order_id IS DISTINCT FROM '{bad_order}')")
    try:
        raw = Producer({"bootstrap.servers": Kafka(cfg).bootstrap})
        for e in events:
            raw.produce(cfg.services.kafka.topics.events, key=user.encode(), value=e.to_json())
        raw.flush(10)
        consumer = FeatureConsumer(cfg, group_id=f"g-{uuid.uuid4().hex}")
        try:
            messages = []
            deadline = time.monotonic() + 20
            while len(messages) < len(events) and time.monotonic() < deadline:
                messages += [m for m in consumer.consumer.consume(100, 0.5) if m.error() is None]
            first = consumer.process(messages)
            again = consumer.process(messages)     # a replay after a crash before the commit
        finally:
            consumer.close()
    finally:
        pg.execute(f"ALTER TABLE events DROP CONSTRAINT test_{user.replace('-', '_')}")
    assert (first.logged, first.applied, first.dead) == (20, 20, 1)
    assert (again.logged, again.applied, again.dead) == (0, 0, 0)
    reason, = pg.execute("SELECT reason FROM dead_letters WHERE topic = %s", (cfg.services.kafka.topics.events,)).fetchone()
    assert "CheckViolation" in reason
    assert pg.execute("SELECT count(*) FROM events WHERE user_id = %s", (user,)).fetchone()[0] == 20
    letters = read_topic(cfg, cfg.services.kafka.topics.dlq, 2, timeout=8)
    assert len(letters) == 1 and letters[0]["letter_id"].startswith(cfg.services.kafka.topics.events)


def test_an_event_whose_redis_writes_fail_is_not_marked_seen(topic_cfg, pg, skus):
    cfg = topic_cfg
    consumer = FeatureConsumer(cfg, group_id=f"g-{uuid.uuid4().hex}")
    try:
        store = consumer.store
        broken, fine = f"broken-{uuid.uuid4().hex[:6]}", f"fine-{uuid.uuid4().hex[:6]}"
        store.r.set(store.user_key(broken), "not a hash")          # WRONGTYPE for the user's hash
        bad = Event(type="product_viewed", user_id=broken, sku=skus[0])
        good = Event(type="product_viewed", user_id=fine, sku=skus[1])
        with pytest.raises(redis.ResponseError) as err:
            store.apply([bad], consumer.category_of)
        assert is_poison(err.value)
        assert not store.r.exists(store.seen_key(bad.event_id))
        store.r.delete(store.user_key(broken))                      # repaired: the retry applies it
        assert store.apply([bad, good], consumer.category_of) == 2
        assert store.user_state(broken).known and store.user_state(fine).known
    finally:
        consumer.close()


def test_an_outage_is_not_poison_and_nothing_is_committed(topic_cfg, pg, skus):
    cfg = topic_cfg
    user = f"outage-{uuid.uuid4().hex[:6]}"
    group = f"g-{uuid.uuid4().hex}"
    events = [Event(type="product_viewed", user_id=user, sku=s) for s in skus]
    raw = Producer({"bootstrap.servers": Kafka(cfg).bootstrap})
    for e in events:
        raw.produce(cfg.services.kafka.topics.events, key=user.encode(), value=e.to_json())
    raw.flush(10)
    consumer = FeatureConsumer(cfg, group_id=group)
    consumer.conn.close()                      # Postgres "goes away" under the consumer
    try:
        with pytest.raises(psycopg.OperationalError) as err:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                consumer.poll_once(0.5)
        assert not is_poison(err.value)
    finally:
        consumer.close()
    assert pg.execute("SELECT count(*) FROM dead_letters WHERE topic = %s",
                      (cfg.services.kafka.topics.events,)).fetchone()[0] == 0
    resumed = FeatureConsumer(cfg, group_id=group)   # the same group resumes from the last commit
    try:
        consume_until(resumed, lambda: pg.execute("SELECT count(*) FROM events WHERE user_id = %s",
                                                  (user,)).fetchone()[0] == len(events))
    finally:
        resumed.close()


def test_poison_classification():
    assert is_poison(psycopg.errors.CharacterNotInRepertoire())        # 22021: NUL in text
    assert is_poison(psycopg.errors.NumericValueOutOfRange())          # 22003
    assert is_poison(psycopg.errors.CheckViolation())                  # 23514
    assert not is_poison(psycopg.OperationalError("connection lost"))
    assert not is_poison(psycopg.errors.UndefinedTable())              # our bug, not the message's
    assert is_poison(redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"))
    assert not is_poison(redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'"))
    assert not is_poison(redis.ConnectionError("Connection refused"))
