"""The feature consumer: events topic -> Redis online features + Postgres event log; bad events -> DLQ.

A batch goes through two stages, the Postgres log (and impressions), then the Redis features; while
one batch is in Redis the next is validated and logged (`run`). Offsets are committed only after both
stages. Both writes are idempotent by event_id, so a crash between them is healed by the replay
that follows.

One message must never stop the consumer. A write that fails because of the data (a Postgres data or
integrity error, a Redis script error) splits its batch and retries each half, down to the single
message, which becomes a dead letter with the reason; the rest of the batch is stored. A dependency
that is down is not the data's fault: that error propagates, nothing is committed, and the run loop
waits with backoff and resumes from the last commit.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import psycopg
import redis
from confluent_kafka import Consumer, KafkaError, TopicPartition

from recsys.features import dead_letters
from recsys.features.broker import EventProducer
from recsys.features.dead_letters import DeadLetter
from recsys.features.event_log import write_events
from recsys.features.events import IntakeLimits, parse_event
from recsys.features.impression_log import write_impressions
from recsys.features.online_store import OnlineStore

log = logging.getLogger(__name__)

# Redis answers these when the server, not the message, is the problem.
REDIS_OUTAGE_PREFIXES = ("OOM", "READONLY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY", "NOREPLICAS")


def is_poison(exc: BaseException) -> bool:
    """True when `exc` comes from the message's content (retrying it can never succeed), False when a
    dependency is down or misbehaving (wait and retry)."""
    if isinstance(exc, psycopg.Error):
        # SQLSTATE class 22 (data exception: numeric overflow...) and 23 (constraint violation), and what
        # psycopg refuses to send (a NUL in text): DataError / IntegrityError. Anything else is ours or the server's.
        return isinstance(exc, (psycopg.DataError, psycopg.IntegrityError))
    if isinstance(exc, redis.ResponseError):
        return not str(exc).startswith(REDIS_OUTAGE_PREFIXES)
    if isinstance(exc, (redis.RedisError, OSError)):
        return False
    return isinstance(exc, (ValueError, TypeError, KeyError, UnicodeError))


@dataclass
class BatchStats:
    messages: int = 0
    logged: int = 0        # new rows in the event log
    applied: int = 0       # events applied to Redis for the first time
    dead: int = 0          # new dead letters (each letter counts once, however often its batch is replayed)
    impressions: int = 0


@dataclass
class Batch:
    """One consumed batch on its way through the log stage and the features stage."""

    messages: list
    stats: BatchStats
    events: list = field(default_factory=list)            # (message, event) pairs the log accepted
    letters: list[DeadLetter] = field(default_factory=list)

    def offsets(self) -> list[TopicPartition]:
        """What to commit once the batch is stored: past its last message in each partition."""
        last: dict[tuple[str, int], int] = {}
        for m in self.messages:
            key = (m.topic(), m.partition())
            last[key] = max(last.get(key, -1), m.offset())
        return [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in last.items()]


class FeatureConsumer:
    def __init__(self, cfg, group_id: str | None = None, redis_prefix: str | None = None):
        from recsys.services import Kafka, Postgres

        self.cfg = cfg
        c = cfg.features.consumer
        self.topics = cfg.services.kafka.topics
        self.impressions_topic = str(self.topics.impressions)   # a plain str: compared once per message
        self.limits = IntakeLimits.from_config(cfg)
        # The stores first, the group last: a member that joined and then failed to start would hold
        # its partitions, unpolled, until the broker evicts it (max.poll.interval.ms, minutes): the
        # chaos bench's Postgres restart stalled ingestion for 2.5 minutes that way.
        self.conn = psycopg.connect(Postgres(cfg).dsn, autocommit=True)
        try:
            self.store = OnlineStore.from_config(cfg, redis_prefix)
            self.dlq = EventProducer(Kafka(cfg).bootstrap, self.topics)
            self.category_of = dict(self.conn.execute("SELECT sku, category FROM items").fetchall())
            self.consumer = Consumer({
                "bootstrap.servers": Kafka(cfg).bootstrap,
                "group.id": group_id or c.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": int(c.session_timeout_ms),
                "heartbeat.interval.ms": int(c.heartbeat_interval_ms),
            })
            self.consumer.subscribe([self.topics.events, self.topics.impressions])
        except BaseException:
            self.conn.close()
            raise

    def _known(self, sku: str) -> bool:
        if sku not in self.category_of:  # a SKU added since start-up
            row = self.conn.execute("SELECT category FROM items WHERE sku = %s", (sku,)).fetchone()
            if row:
                self.category_of[sku] = row[0]
        return sku in self.category_of

    # The two stages of a batch: the log (and impressions) in Postgres, then the features in Redis. ---
    def log_stage(self, messages) -> "Batch":
        """Validate the batch and write the event log and the impressions; what fails becomes a letter."""
        batch = Batch(messages=messages, stats=BatchStats(messages=len(messages)))
        events, impressions = [], []
        for m in messages:
            if m.topic() == self.impressions_topic:
                try:   # one impression, or a replica's batch of them (recsys/serve/write_behind.py)
                    value = json.loads(m.value())
                    batch_of = value if isinstance(value, list) else [value]
                    for impression in batch_of:
                        if not isinstance(impression, dict):
                            raise ValueError(f"an impression is a JSON object, not {type(impression).__name__}")
                    impressions.extend((m, impression) for impression in batch_of)
                except (ValueError, TypeError) as exc:
                    batch.letters.append(DeadLetter.of_message(m, f"impression: {exc}"))
                continue
            event, reason = parse_event(m.value(), self.limits)
            if event is not None and not self._known(event.sku):
                event, reason = None, f"sku: unknown SKU {event.sku!r}"
            if event is None:
                batch.letters.append(DeadLetter.of_message(m, reason))
            else:
                events.append((m, event))
        batch.stats.logged = self._isolated(events, self._write_log, batch.letters)
        batch.stats.impressions = self._isolated(impressions, self._write_impressions, batch.letters)
        refused = {l.letter_id for l in batch.letters}
        batch.events = [(m, e) for m, e in events if DeadLetter.id_of(m) not in refused]
        return batch

    def features_stage(self, batch: "Batch") -> "Batch":
        """Apply the logged events to Redis (an event the log refused never gets here)."""
        batch.stats.applied = self._isolated(batch.events, self._write_features, batch.letters)
        return batch

    def finish(self, batch: "Batch") -> BatchStats:
        """Dead letters out, then the batch's offsets committed: its messages are stored or lettered."""
        batch.stats.dead = self._send_dead_letters(batch.letters)
        self.consumer.commit(offsets=batch.offsets(), asynchronous=False)
        return batch.stats

    def process(self, messages) -> BatchStats:
        """Validate and write one batch through both stages; the caller commits offsets afterwards."""
        batch = self.features_stage(self.log_stage(messages))
        batch.stats.dead = self._send_dead_letters(batch.letters)
        return batch.stats

    def _write_log(self, items: Sequence) -> int:
        return write_events(self.conn, [e for _, e in items], int(self.cfg.features.dedupe_ttl_s))

    def _write_features(self, items: Sequence) -> int:
        return self.store.apply([e for _, e in items], self.category_of)

    def _write_impressions(self, items: Sequence) -> int:
        return write_impressions(self.conn, [i for _, i in items])

    def _isolated(self, items: Sequence, write: Callable, letters: list[DeadLetter]) -> int:
        """`write(items)`; when the data makes it fail, halve and retry until the bad messages stand alone,
        then turn each into a dead letter. Returns the summed results of the writes that succeeded."""
        if not items:
            return 0
        try:
            return write(items)
        except Exception as exc:
            if not is_poison(exc):
                raise
            if len(items) == 1:
                message = items[0][0]
                log.warning("dead letter at %s/%d/%d: %s", message.topic(), message.partition(), message.offset(), exc)
                letters.append(DeadLetter.of_message(message, f"not storable: {type(exc).__name__}: {exc}"))
                return 0
        mid = len(items) // 2
        return self._isolated(items[:mid], write, letters) + self._isolated(items[mid:], write, letters)

    def _send_dead_letters(self, letters: list[DeadLetter]) -> int:
        """Record the letters once each, publish those not yet on the topic; return how many were new.
        A message is one letter (its whole payload), however many of the impressions it batches failed."""
        letters = list({l.letter_id: l for l in reversed(letters)}.values())[::-1]   # the first reason stands
        pending = dead_letters.record(self.conn, letters)
        if pending:
            self.dlq.send_dead_letters([l.as_message() for l in pending])
            dead_letters.mark_published(self.conn, pending)
        return len(pending)

    # Consuming -----------------------------------------------------------------------------------
    def _consume(self, timeout: float | None = None) -> list:
        c = self.cfg.features.consumer
        raw = self.consumer.consume(int(c.batch_size), timeout if timeout is not None else float(c.poll_timeout_s))
        messages = []
        for m in raw:
            if m.error() is None:
                messages.append(m)
            elif m.error().code() != KafkaError._PARTITION_EOF:
                log.warning("broker error: %s", m.error())
        return messages

    def poll_once(self, timeout: float | None = None) -> BatchStats:
        """One batch, both stages, committed: simple and synchronous (tests, tools)."""
        messages = self._consume(timeout)
        if not messages:
            return BatchStats()
        return self.finish(self.features_stage(self.log_stage(messages)))

    def run(self, running: Callable[[], bool], on_batch: Callable[[BatchStats], None] = lambda stats: None) -> None:
        """Consume while `running()`, pipelined: batch N's Redis stage runs on a thread of its own while
        batch N+1 is read, validated and logged, so the two servers work at once. Order is kept (one
        Redis stage at a time, in batch order) and batch N is committed only after both its stages."""
        with ThreadPoolExecutor(1, thread_name_prefix="features") as features:
            pending = None
            while running():
                messages = self._consume()
                batch = self.log_stage(messages) if messages else None
                if pending is not None:
                    on_batch(self.finish(pending.result()))   # an outage in it raises here
                    pending = None
                if batch is not None:
                    pending = features.submit(self.features_stage, batch)
            if pending is not None:
                on_batch(self.finish(pending.result()))

    def close(self) -> None:
        self.consumer.close()
        self.conn.close()
        self.dlq.flush()


def run_consumer(cfg, max_seconds: float | None = None, stop: Callable[[], bool] = lambda: False) -> None:
    """Consume until stopped (or for max_seconds). A failed batch is retried from the last commit,
    after a backoff that grows while the dependency stays down."""
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    backoff = 1.0

    def running() -> bool:
        return not stop() and (deadline is None or time.monotonic() < deadline)

    while running():
        consumer = None
        try:
            consumer = FeatureConsumer(cfg)
            log.info("feature consumer running")

            def on_batch(stats: BatchStats) -> None:
                nonlocal backoff
                log.info("batch: %s", stats)
                backoff = 1.0

            consumer.run(running, on_batch)
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
