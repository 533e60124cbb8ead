"""Kafka clients: events keyed by user_id, bad ones to the dead-letter topic with their reason."""

from __future__ import annotations

import json
import time
from typing import Iterable

from confluent_kafka import Producer

from recsys.features.events import Event


class DeliveryError(RuntimeError):
    """The broker did not acknowledge every message in time."""


class EventProducer:
    def __init__(self, bootstrap: str, topics, linger_ms: int = 2):
        self.topics = topics
        self._producer = Producer({
            "bootstrap.servers": bootstrap, "linger.ms": linger_ms, "acks": "all",
            "enable.idempotence": False, "message.timeout.ms": 10000,
            "log_level": 2,  # connection churn is reported through delivery errors instead
        })

    def _produce_all(self, messages: Iterable[tuple[str, str, bytes]], timeout: float) -> int:
        failures: list[str] = []
        sent = 0

        def on_delivery(err, _msg):
            if err is not None:
                failures.append(str(err))

        for topic, key, value in messages:
            while True:
                try:
                    self._producer.produce(topic, key=key.encode(), value=value, on_delivery=on_delivery)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    self._producer.poll(0.05)
            sent += 1
        deadline = time.monotonic() + timeout
        while self._producer.flush(0.1) > 0:
            if time.monotonic() > deadline:
                raise DeliveryError(f"broker did not acknowledge {len(self._producer)} messages in {timeout} s")
        if failures:
            raise DeliveryError(f"{len(failures)} of {sent} messages failed: {failures[0]}")
        return sent

    def send_events(self, events: list[Event], timeout: float = 10.0) -> int:
        """Produce and wait for the broker's acknowledgement of every event."""
        return self._produce_all(((self.topics.events, e.user_id, e.to_json()) for e in events), timeout)

    def send_dead_letters(self, letters: list[dict], timeout: float = 10.0) -> int:
        """Each letter: {"reason", "payload", "source", ...}; keyed by the reason's first word."""
        return self._produce_all(
            ((self.topics.dlq, str(l.get("user_id") or "unknown"), json.dumps(l, default=str).encode())
             for l in letters), timeout)

    def send_impression(self, impression: dict) -> None:
        """Fire and forget: serving never waits on the impression log."""
        try:
            self._producer.produce(self.topics.impressions, key=str(impression.get("user_id") or "").encode(),
                                   value=json.dumps(impression, default=str).encode())
            self._producer.poll(0)
        except BufferError:
            pass

    def flush(self, timeout: float = 5.0) -> int:
        return self._producer.flush(timeout)
