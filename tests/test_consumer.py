"""Events through the real broker into Redis and the Postgres log; bad ones into the dead-letter topic."""

import json
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from recsys.features.broker import EventProducer
from recsys.features.consumer import FeatureConsumer
from recsys.features.events import Event
from recsys.services import Kafka
from tests.conftest import make_cfg


@pytest.fixture
def topic_cfg(world):
    """Topics and a key prefix of this test's own, on the suite's broker."""
    tag = uuid.uuid4().hex[:8]
    cfg = make_cfg(f"services.kafka.topics.events=t.events.{tag}", f"services.kafka.topics.dlq=t.dlq.{tag}",
                   f"services.kafka.topics.impressions=t.impressions.{tag}",
                   f"services.redis.key_prefix={world.services.redis.key_prefix}c{tag}:")
    Kafka(cfg).create_topics()
    return cfg


def drain(consumer: FeatureConsumer, expected: int, timeout: float = 30.0):
    total = {"messages": 0, "logged": 0, "applied": 0, "dead": 0}
    deadline = time.monotonic() + timeout
    while total["messages"] < expected and time.monotonic() < deadline:
        stats = consumer.poll_once(0.5)
        for k in total:
            total[k] += getattr(stats, k)
    return total


def read_topic(cfg, topic: str, n: int, timeout: float = 20.0) -> list[dict]:
    c = Consumer({"bootstrap.servers": Kafka(cfg).bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "session.timeout.ms": 2000, "heartbeat.interval.ms": 500})
    c.subscribe([topic])
    out, deadline = [], time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            out.append(json.loads(m.value()))
    c.close()
    return out


def test_events_reach_redis_and_the_log_bad_ones_the_dlq_and_replay_is_harmless(topic_cfg, pg):
    cfg = topic_cfg
    skus = [r[0] for r in pg.execute("SELECT sku FROM items ORDER BY sku LIMIT 3")]
    user = f"cons-{uuid.uuid4().hex[:6]}"
    good = [Event(type="product_viewed", user_id=user, sku=skus[0], device="desktop", geo="DE", session_id="s"),
            Event(type="product_viewed", user_id=user, sku=skus[1]),
            Event(type="add_to_cart", user_id=user, sku=skus[1], price=9.5),
            Event(type="purchase_completed", user_id=user, sku=skus[1], price=9.5, order_id="o-1")]
    EventProducer(Kafka(cfg).bootstrap, cfg.services.kafka.topics).send_events(good)
    raw = Producer({"bootstrap.servers": Kafka(cfg).bootstrap})
    bad = [b"{broken", json.dumps({"type": "product_viewed", "user_id": user}).encode(),
           json.dumps({"type": "product_viewed", "user_id": user, "sku": "NO-SUCH-SKU"}).encode()]
    for value in bad:
        raw.produce(cfg.services.kafka.topics.events, key=user.encode(), value=value)
    raw.flush(10)

    consumer = FeatureConsumer(cfg, group_id=f"g-{uuid.uuid4().hex}")
    try:
        stats = drain(consumer, len(good) + len(bad))
    finally:
        consumer.close()
    assert stats == {"messages": 7, "logged": 4, "applied": 4, "dead": 3}

    now = time.time()
    state = consumer.store.user_state(user, now=now)
    assert [s for s, _ in state.views] == [skus[1], skus[0]]
    assert state.device == "desktop" and state.geo == "DE"
    assert state.cart == set() and set(state.purchased) == {skus[1]}
    rows = pg.execute("SELECT event_id, type, price::float8, order_id FROM events WHERE user_id = %s ORDER BY ts",
                      (user,)).fetchall()
    assert [r[0] for r in rows] == [e.event_id for e in good]
    assert rows[3][2:] == (9.5, "o-1")

    letters = read_topic(cfg, cfg.services.kafka.topics.dlq, 3)
    reasons = sorted(letter["reason"] for letter in letters)
    assert len(letters) == 3, letters
    assert any(r.startswith("not JSON") for r in reasons)
    assert any("sku: Field required" in r for r in reasons)
    assert any("unknown SKU 'NO-SUCH-SKU'" in r for r in reasons)
    assert all(letter["payload"] and letter["source"] == "consumer" for letter in letters)

    # A second group replays the whole topic from the start: nothing changes anywhere.
    replay = FeatureConsumer(cfg, group_id=f"g-{uuid.uuid4().hex}")
    try:
        again = drain(replay, len(good) + len(bad))
    finally:
        replay.close()
    assert again["logged"] == 0 and again["applied"] == 0
    assert replay.store.user_state(user, now=now) == state
    assert pg.execute("SELECT count(*) FROM events WHERE user_id = %s", (user,)).fetchone()[0] == 4


def test_a_replicas_batch_of_impressions_is_one_message_and_every_row_lands_once(topic_cfg, pg):
    cfg = topic_cfg
    tag = uuid.uuid4().hex[:8]
    batch = [{"request_id": f"imp-{tag}-{i}", "ts": time.time(), "surface": "homepage_hero", "user_id": f"u-{tag}",
              "skus": ["A", "B"], "sources": ["two_tower", "als"], "degraded": []} for i in range(30)]
    producer = EventProducer(Kafka(cfg).bootstrap, cfg.services.kafka.topics)
    producer.send_impressions(batch)
    producer.send_impressions(batch[:5])        # a replay: stored once
    producer.flush(10)
    consumer = FeatureConsumer(cfg, group_id=f"g-{uuid.uuid4().hex}")
    try:
        drain(consumer, 2)
    finally:
        consumer.close()
    stored = pg.execute("SELECT count(*) FROM impressions WHERE request_id LIKE %s", (f"imp-{tag}-%",)).fetchone()[0]
    assert stored == 30
