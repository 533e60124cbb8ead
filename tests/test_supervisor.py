"""The consumers run supervised: a SIGKILLed consumer is restarted by Ray and ingestion resumes
without a person; status shows the workers and the group's lag."""

import os
import signal
import time
import uuid

from recsys.features import supervisor
from recsys.features.broker import EventProducer
from recsys.features.events import Event
from recsys.features.online_store import OnlineStore
from recsys.services import Kafka
from tests.conftest import make_cfg


def wait(predicate, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"{what} took over {timeout} s"
        time.sleep(0.2)
    return time.monotonic() - start


def test_a_killed_consumer_is_restarted_and_ingestion_resumes(world, pg):
    tag = uuid.uuid4().hex[:8]
    cfg = make_cfg(f"services.kafka.topics.events=s.events.{tag}", f"services.kafka.topics.dlq=s.dlq.{tag}",
                   f"services.kafka.topics.impressions=s.impressions.{tag}", f"features.consumer.group_id=s-{tag}",
                   f"services.redis.key_prefix={world.services.redis.key_prefix}s{tag}:")
    Kafka(cfg).create_topics()
    sku = pg.execute("SELECT sku FROM items ORDER BY sku LIMIT 1").fetchone()[0]
    store = OnlineStore.from_config(cfg)
    producer = EventProducer(Kafka(cfg).bootstrap, cfg.services.kafka.topics)

    def ingested(event: Event) -> bool:
        in_log = pg.execute("SELECT 1 FROM events WHERE event_id = %s", (event.event_id,)).fetchone()
        return bool(in_log) and store.r.exists(store.seen_key(event.event_id)) == 1

    try:
        assert supervisor.start(cfg) == [f"s-{tag}-0"]
        assert supervisor.start(cfg) == [f"s-{tag}-0"]            # idempotent: still one worker
        first = Event(type="product_viewed", user_id=f"sup-{tag}", sku=sku)
        producer.send_events([first])
        wait(lambda: ingested(first), 60, "the first event")

        pid = supervisor.consumer_pids(cfg)[f"s-{tag}-0"]
        os.kill(pid, signal.SIGKILL)
        after_kill = Event(type="add_to_cart", user_id=f"sup-{tag}", sku=sku, price=5.0)
        producer.send_events([after_kill])
        took = wait(lambda: ingested(after_kill), 60, "an event sent after the kill")
        print(f"ingested {took:.1f} s after the consumer was killed")

        assert supervisor.consumer_pids(cfg)[f"s-{tag}-0"] != pid
        worker, = supervisor.status(cfg)
        assert worker.state == "ALIVE" and worker.restarts >= 1
        wait(lambda: sum(supervisor.lag(cfg).values()) == 0, 30, "the lag to drain")
        assert pg.execute("SELECT count(*) FROM events WHERE user_id = %s", (f"sup-{tag}",)).fetchone()[0] == 2
    finally:
        assert supervisor.stop(cfg) == [f"s-{tag}-0"]
        store.delete_all()
