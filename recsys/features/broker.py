"""Kafka clients: events keyed by user_id, bad ones to the dead-letter topic with their reason."""

from __future__ import annotations

import json
import threading
import time
from typing import Iterable

from confluent_kafka import Producer

from recsys.features.events import Event


class DeliveryError(RuntimeError):
    """The broker did not acknowledge every message in time."""


class EventProducer:
    """One librdkafka producer. `send_events`/`send_dead_letters` wait for their own messages only
    (several requests share a producer); impressions get a producer of their own (Resources), so a
    backlog of them never delays or fails an event intake."""

    def __init__(self, bootstrap: str, topics, linger_ms: int = 2, message_timeout_ms: int = 10000):
        self.topics = topics
        self._producer = Producer({
            "bootstrap.servers": bootstrap, "linger.ms": linger_ms, "acks": "all",
            "enable.idempotence": False, "message.timeout.ms": int(message_timeout_ms),
            "log_level": 2,  # connection churn is reported through delivery errors instead
        })

    def _produce_all(self, messages: Iterable[tuple[str, str, bytes]], timeout: float) -> int:
        """Produce, then serve delivery callbacks until this call's messages are all acknowledged
        (or failed), without waiting for anyone else's: another thread's poll() may run our callbacks."""
        lock, done = threading.Lock(), threading.Event()
        state = {"pending": 0, "produced": False, "failures": []}

        def on_delivery(err, _msg):
            with lock:
                state["pending"] -= 1
                if err is not None:
                    state["failures"].append(str(err))
                if state["produced"] and state["pending"] == 0:
                    done.set()

        deadline = time.monotonic() + timeout
        sent = 0
        for topic, key, value in messages:
            while True:
                with lock:
                    state["pending"] += 1
                try:
                    self._producer.produce(topic, key=key.encode(), value=value, on_delivery=on_delivery)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    with lock:
                        state["pending"] -= 1
                    if time.monotonic() > deadline:
                        raise DeliveryError(f"producer queue full for {timeout} s") from None
                    self._producer.poll(0.05)
            sent += 1
        with lock:
            state["produced"] = True
            if state["pending"] == 0:
                done.set()
        while not done.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeliveryError(f"broker did not acknowledge {state['pending']} of {sent} messages in {timeout} s")
            self._producer.poll(min(0.05, left))
        if state["failures"]:
            raise DeliveryError(f"{len(state['failures'])} of {sent} messages failed: {state['failures'][0]}")
        return sent

    def send_events(self, events: list[Event], timeout: float = 10.0) -> int:
        """Produce and wait for the broker's acknowledgement of every event."""
        return self._produce_all(((self.topics.events, e.user_id, e.to_json()) for e in events), timeout)

    def send_dead_letters(self, letters: list[dict], timeout: float = 10.0) -> int:
        """Each letter: {"reason", "payload", "source", ...}; keyed by the reason's first word."""
        return self._produce_all(
            ((self.topics.dlq, str(l.get("user_id") or "unknown"), json.dumps(l, default=str).encode())
             for l in letters), timeout)

    def send_impressions(self, impressions: list[dict]) -> None:
        """Fire and forget, as one message (a JSON list): serving never waits on the impression log, and
        a replica's batch costs the broker and the consumer one message, not one per response."""
        if not impressions:
            return
        try:
            self._producer.produce(self.topics.impressions, key=str(impressions[0].get("user_id") or "").encode(),
                                   value=json.dumps(impressions, default=str).encode())
            self._producer.poll(0)
        except BufferError:
            pass

    def flush(self, timeout: float = 5.0) -> int:
        return self._producer.flush(timeout)
