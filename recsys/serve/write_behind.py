"""What a response does not wait for: its cache entry, a recomputed user vector, its impression.

They are queued in the replica and written by one background thread every `serve.write_behind.flush_ms`
(sooner once `max_batch` are queued): the Redis writes of all queued requests in one pipeline, the
impressions as one broker message. A cache miss saves a Redis round trip and the
impression's encoding, and Redis and the broker see a few large batches instead of many small ones.

Impressions are handed over every `impression_flush_ms` (or once `max_batch` wait), less often than
the Redis writes: a cache entry is worth writing at once, an impression only has to reach the log.

The queue is bounded (`max_queued`): when the writer cannot keep up (Redis or the broker down for
long), the oldest writes are dropped and counted in `dropped`, instead of a replica growing without
end. A dropped cache entry costs a recomputation; a dropped impression is missing from the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

log = logging.getLogger(__name__)


class WriteBehind:
    def __init__(self, redis_client, impression_producer: Callable, flush_ms: float, max_batch: int,
                 max_queued: int, impression_flush_ms: float | None = None):
        self.r = redis_client
        self.impression_producer = impression_producer   # () -> EventProducer, made on first use
        self.flush_s, self.max_batch = flush_ms / 1000, max_batch
        # impressions wait longer than cache entries: every broker message costs the embedded broker and
        # the consumer far more than its bytes (docs/benchmarks-serving.md)
        self.impressions_every_s = (impression_flush_ms if impression_flush_ms is not None else flush_ms) / 1000
        self._impressions_due = 0.0
        self.redis_writes: deque[Callable] = deque(maxlen=max_queued)   # each queues commands on a pipeline
        self.impressions: deque[dict] = deque(maxlen=max_queued)
        self.dropped = 0
        self._wake = threading.Event()
        self._flushing = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="write-behind", daemon=True)
        self._thread.start()

    def redis(self, write: Callable) -> None:
        """`write(pipeline)` queues the commands of one request's Redis writes."""
        self._count_drop(self.redis_writes)
        self.redis_writes.append(write)
        self._nudge()

    def impression(self, impression: dict) -> None:
        self._count_drop(self.impressions)
        self.impressions.append(impression)
        self._nudge()

    def flush(self, impressions: bool = True) -> None:
        """Write everything queued now, in the caller's thread (tests, shutdown)."""
        with self._flushing:
            self._write_redis()
            if impressions:
                self._write_impressions()

    def _count_drop(self, queue: deque) -> None:
        if len(queue) == queue.maxlen:
            self.dropped += 1

    def _nudge(self) -> None:
        if len(self.redis_writes) + len(self.impressions) >= self.max_batch:
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_s)
            self._wake.clear()
            now = time.monotonic()
            due = now >= self._impressions_due or len(self.impressions) >= self.max_batch
            if due:
                self._impressions_due = now + self.impressions_every_s
            try:
                self.flush(impressions=due)
            except Exception:   # the writer must outlive any outage; what failed is lost, not retried
                log.warning("write-behind flush failed", exc_info=True)

    def _write_redis(self) -> None:
        writes = _drain(self.redis_writes)
        if writes:
            pipe = self.r.pipeline(transaction=False)
            for write in writes:
                write(pipe)
            pipe.execute()

    def _write_impressions(self) -> None:
        impressions = _drain(self.impressions)
        for start in range(0, len(impressions), self.max_batch):
            self.impression_producer().send_impressions(impressions[start:start + self.max_batch])


def _drain(queue: deque) -> list:
    out = []
    while queue:
        try:
            out.append(queue.popleft())
        except IndexError:
            break
    return out
