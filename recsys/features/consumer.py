"""The feature consumer: events topic -> Redis online features + Postgres event log; bad events -> DLQ.

Offsets are committed only after both writes succeeded. Both writes are idempotent by event_id, so
a crash between them is healed by the replay that follows.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import psycopg
from confluent_kafka import Consumer, KafkaError

from recsys.features.broker import EventProducer
from recsys.features.event_log import write_events
from recsys.features.events import parse_event
from recsys.features.impression_log import write_impressions
from recsys.features.online_store import OnlineStore

log = logging.getLogger(__name__)


@dataclass
class BatchStats:
    messages: int = 0
    logged: int = 0        # new rows in the event log
    applied: int = 0       # events applied to Redis for the first time
    dead: int = 0          # sent to the dead-letter topic
    impressions: int = 0


class FeatureConsumer:
    def __init__(self, cfg, group_id: str | None = None, redis_prefix: str | None = None):
        from recsys.services import Kafka, Postgres

        self.cfg = cfg
        c = cfg.features.consumer
        self.topics = cfg.services.kafka.topics
        self.consumer = Consumer({
            "bootstrap.servers": Kafka(cfg).bootstrap,
            "group.id": group_id or c.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": int(c.session_timeout_ms),
            "heartbeat.interval.ms": int(c.heartbeat_interval_ms),
        })
        self.consumer.subscribe([self.topics.events, self.topics.impressions])
        self.store = OnlineStore.from_config(cfg, redis_prefix)
        self.conn = psycopg.connect(Postgres(cfg).dsn, autocommit=True)
        self.dlq = EventProducer(Kafka(cfg).bootstrap, self.topics)
        self.category_of = dict(self.conn.execute("SELECT sku, category FROM items").fetchall())

    def _known(self, sku: str) -> bool:
        if sku not in self.category_of:  # a SKU added since start-up
            row = self.conn.execute("SELECT category FROM items WHERE sku = %s", (sku,)).fetchone()
            if row:
                self.category_of[sku] = row[0]
        return sku in self.category_of

    def process(self, messages) -> BatchStats:
        """Validate and write one batch; the caller commits offsets afterwards."""
        stats = BatchStats(messages=len(messages))
        events, letters, impressions = [], [], []
        for m in messages:
            if m.topic() == self.topics.impressions:
                try:
                    impressions.append(json.loads(m.value()))
                except (ValueError, TypeError):
                    log.warning("skipping unreadable impression at %s/%d", m.partition(), m.offset())
                continue
            event, reason = parse_event(m.value())
            if event is not None and not self._known(event.sku):
                event, reason = None, f"sku: unknown SKU {event.sku!r}"
            if event is None:
                letters.append({"reason": reason, "payload": (m.value() or b"").decode("utf-8", "replace"),
                                "source": "consumer", "topic": m.topic(), "partition": m.partition(),
                                "offset": m.offset(), "user_id": (m.key() or b"").decode("utf-8", "replace")})
            else:
                events.append(event)
        if events:
            stats.logged = write_events(self.conn, events)
            stats.applied = self.store.apply(events, self.category_of)
        if impressions:
            stats.impressions = write_impressions(self.conn, impressions)
        if letters:
            stats.dead = self.dlq.send_dead_letters(letters)
        return stats

    def poll_once(self, timeout: float | None = None) -> BatchStats:
        c = self.cfg.features.consumer
        raw = self.consumer.consume(int(c.batch_size), timeout if timeout is not None else float(c.poll_timeout_s))
        messages = []
        for m in raw:
            if m.error() is None:
                messages.append(m)
            elif m.error().code() != KafkaError._PARTITION_EOF:
                log.warning("broker error: %s", m.error())
        if not messages:
            return BatchStats()
        stats = self.process(messages)
        self.consumer.commit(asynchronous=False)
        return stats

    def close(self) -> None:
        self.consumer.close()
        self.conn.close()
        self.dlq.flush()


def run_consumer(cfg, max_seconds: float | None = None) -> None:
    """Consume until stopped (or for max_seconds). A failed batch is retried from the last commit."""
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    backoff = 1.0
    while deadline is None or time.monotonic() < deadline:
        consumer = None
        try:
            consumer = FeatureConsumer(cfg)
            log.info("feature consumer running")
            while deadline is None or time.monotonic() < deadline:
                stats = consumer.poll_once()
                if stats.messages:
                    log.info("batch: %s", stats)
                backoff = 1.0
        except KeyboardInterrupt:
            return
        except Exception:  # a dependency failed: rejoin and resume from the committed offsets
            log.exception("consumer batch failed; retrying in %.0f s", backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
        finally:
            if consumer is not None:
                try:
                    consumer.close()
                except Exception:
                    pass
