"""Writes behind the response: batched into one Redis pipeline and one hand-over to the producer,
bounded when the writer falls behind."""

import time
import uuid

from recsys.features.online_store import OnlineStore
from recsys.serve.write_behind import WriteBehind


class Collecting:
    """Stands in for the impression producer's interface (the broker path is tested in test_api)."""

    def __init__(self):
        self.sent = []

    def send_impressions(self, impressions: list[dict]) -> None:
        self.sent.extend(impressions)
        self.messages = getattr(self, "messages", 0) + 1


def test_queued_writes_land_within_a_flush_interval(stack):
    store = OnlineStore.from_config(stack, prefix=f"{stack.services.redis.key_prefix}wb-{uuid.uuid4().hex[:6]}:")
    producer = Collecting()
    writes = WriteBehind(store.r, lambda: producer, flush_ms=20, max_batch=100, max_queued=1000)
    try:
        for i in range(3):
            writes.redis(lambda pipe, i=i: pipe.set(f"{store.p}k{i}", i, px=60_000))
            writes.impression({"request_id": f"r{i}"})
        deadline = time.monotonic() + 2
        while (len(producer.sent) < 3 or store.r.get(f"{store.p}k2") is None) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [store.r.get(f"{store.p}k{i}") for i in range(3)] == [b"0", b"1", b"2"]
        assert [i["request_id"] for i in producer.sent] == ["r0", "r1", "r2"]
        assert producer.messages <= 3 and writes.dropped == 0
    finally:
        store.delete_all()


def test_past_max_queued_the_oldest_writes_are_dropped_and_counted(stack):
    producer = Collecting()
    writes = WriteBehind(None, lambda: producer, flush_ms=60_000, max_batch=10_000, max_queued=2)
    for i in range(5):
        writes.impression({"request_id": f"r{i}"})
    assert writes.dropped == 3
    writes.flush()
    assert [i["request_id"] for i in producer.sent] == ["r3", "r4"]
