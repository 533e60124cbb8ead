"""Ingestion throughput (broker -> validated -> Postgres log + Redis features) and freshness
(event acknowledged by the broker -> visible in Redis), on a topic and key prefix of their own."""

from __future__ import annotations

import threading
import time

import numpy as np
import psycopg
from omegaconf import OmegaConf

from recsys.features.broker import EventProducer
from recsys.features.consumer import FeatureConsumer
from recsys.features.events import Event
from recsys.services import Kafka, Postgres

BENCH_USERS = "bench-"


def _bench_cfg(cfg, tag: str):
    bcfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    bcfg.services.kafka.topics.events = f"bench.events.{tag}"
    bcfg.services.kafka.topics.impressions = f"bench.impressions.{tag}"
    bcfg.services.redis.key_prefix = f"recsys-bench-{tag}:"
    return bcfg


def _events(skus: list[str], n: int, rng, prefix: str) -> list[Event]:
    kinds = rng.choice(["product_viewed", "add_to_cart", "purchase_completed"], size=n, p=[0.85, 0.1, 0.05])
    out = []
    for i, kind in enumerate(kinds):
        out.append(Event(type=kind, user_id=f"{prefix}{i % 2000}", session_id=f"{prefix}s{i % 5000}",
                         sku=skus[int(rng.integers(len(skus)))], device="mobile", geo="US-CA",
                         price=19.99 if kind != "product_viewed" else None,
                         order_id=f"{prefix}o{i}" if kind == "purchase_completed" else None))
    return out


def bench_ingestion(cfg, n_events: int, freshness_samples: int, seed: int = 0) -> dict[str, tuple[float, str]]:
    tag = str(int(time.time()))
    bcfg = _bench_cfg(cfg, tag)
    kafka = Kafka(bcfg)
    kafka.create_topics()
    rng = np.random.default_rng(seed)
    with psycopg.connect(Postgres(bcfg).dsn, autocommit=True) as conn:
        skus = [r[0] for r in conn.execute("SELECT sku FROM items ORDER BY sku").fetchall()]
    producer = EventProducer(kafka.bootstrap, bcfg.services.kafka.topics)
    consumer = FeatureConsumer(bcfg, group_id=f"bench-{tag}")
    figures: dict[str, tuple[float, str]] = {}
    try:
        events = _events(skus, n_events, rng, f"{BENCH_USERS}{tag}-")
        start = time.perf_counter()
        producer.send_events(events, timeout=60)
        figures["ingest.produce_events_per_s"] = (n_events / (time.perf_counter() - start), "events/s")

        start, consumed = time.perf_counter(), 0
        while consumed < n_events:
            consumed += consumer.poll_once(0.5).messages
            if time.perf_counter() - start > 300:
                raise TimeoutError(f"consumed {consumed} of {n_events} events in 300 s")
        figures["ingest.consume_events_per_s"] = (n_events / (time.perf_counter() - start), "events/s")

        stop = threading.Event()

        def consume_until_stopped() -> None:
            while not stop.is_set():
                consumer.poll_once()

        runner = threading.Thread(target=consume_until_stopped, daemon=True)
        runner.start()
        lags = []
        for i in range(freshness_samples):
            event = _events(skus, 1, rng, f"{BENCH_USERS}{tag}-fresh{i}-")[0]
            key = consumer.store.user_key(event.user_id)
            start = time.perf_counter()
            producer.send_events([event])
            while not consumer.store.r.exists(key):
                if time.perf_counter() - start > 10:
                    raise TimeoutError("an event took over 10 s to reach Redis")
                time.sleep(0.001)
            lags.append((time.perf_counter() - start) * 1000)
        stop.set()
        runner.join(5)
        figures["ingest.freshness_p50_ms"] = (float(np.percentile(lags, 50)), "ms")
        figures["ingest.freshness_p95_ms"] = (float(np.percentile(lags, 95)), "ms")
    finally:
        consumer.store.delete_all()
        consumer.close()
        with psycopg.connect(Postgres(bcfg).dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM events WHERE user_id LIKE %s", (f"{BENCH_USERS}{tag}-%",))
    return figures
