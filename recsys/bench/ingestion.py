"""Ingestion throughput (broker -> validated -> Postgres log + Redis features) and freshness
(event acknowledged by the broker -> visible in Redis), on a topic and key prefix of their own."""

from __future__ import annotations

import os
import time

import numpy as np
import psycopg
from omegaconf import OmegaConf

from recsys.features.broker import EventProducer
from recsys.features.events import Event
from recsys.features.online_store import OnlineStore
from recsys.services import Kafka, Postgres

BENCH_USERS = "bench-"


def _bench_cfg(cfg, tag: str):
    bcfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    bcfg.services.kafka.topics.events = f"bench.events.{tag}"
    bcfg.services.kafka.topics.impressions = f"bench.impressions.{tag}"
    bcfg.services.redis.key_prefix = f"recsys-bench-{tag}:"
    bcfg.features.consumer.group_id = f"bench-{tag}"
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


def bench_ingestion(cfg, n_events: int, freshness_samples: int, runs: int = 3,
                    seed: int = 0) -> dict[str, tuple[float, str]]:
    """Ingestion as deployed: `features.consumer.workers` consumer actors on Ray (recsys.features.supervisor)
    in a group, topics and key prefix of the bench's own. Throughput: a backlog of `n_events` is produced
    while the consumers are stopped; they start, and the rate is the events over the time from the first
    one written to the log until the group's lag is back at zero (every event in the log and in Redis),
    so joining the group does not count. The median of `runs`."""
    from recsys.features import supervisor

    tag = str(int(time.time()))
    bcfg = _bench_cfg(cfg, tag)
    kafka = Kafka(bcfg)
    kafka.create_topics()
    rng = np.random.default_rng(seed)
    conn = psycopg.connect(Postgres(bcfg).dsn, autocommit=True)
    skus = [r[0] for r in conn.execute("SELECT sku FROM items ORDER BY sku").fetchall()]
    producer = EventProducer(kafka.bootstrap, bcfg.services.kafka.topics)
    store = OnlineStore.from_config(bcfg)
    probe = supervisor.LagProbe(bcfg)
    figures: dict[str, tuple[float, str]] = {"ingest.load_avg_1m_before": (os.getloadavg()[0], "load")}

    def ingested(event: Event, timeout: float) -> float:
        """Seconds from now until `event` is in Redis (its writes there come after the log's)."""
        start = time.perf_counter()
        while not store.r.exists(store.seen_key(event.event_id)):
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"an event took over {timeout} s to reach Redis")
            time.sleep(0.001)
        return time.perf_counter() - start

    try:
        produce_rates, consume_rates = [], []
        for run in range(runs):
            prefix = f"{BENCH_USERS}{tag}-r{run}-"
            events = _events(skus, n_events, rng, prefix)
            start = time.perf_counter()
            producer.send_events(events, timeout=60)
            produce_rates.append(n_events / (time.perf_counter() - start))
            supervisor.start(bcfg)
            while sum(probe.read().values()) > 0:
                if time.perf_counter() - start > 300:
                    raise TimeoutError(f"{n_events} events not consumed in 300 s")
                time.sleep(0.05)
            drained = time.time()
            first = conn.execute("SELECT extract(epoch FROM min(received_at)) FROM events WHERE user_id = ANY(%s)",
                                 (sorted({e.user_id for e in events}),)).fetchone()[0]
            consume_rates.append(n_events / (drained - float(first)))
            supervisor.stop(bcfg)
            print(f"  run {run + 1}: produced {produce_rates[-1]:,.0f} events/s, consumed into the log and "
                  f"Redis {consume_rates[-1]:,.0f} events/s", flush=True)
        figures["ingest.produce_events_per_s"] = (float(np.median(produce_rates)), "events/s")
        figures["ingest.consume_events_per_s"] = (float(np.median(consume_rates)), "events/s")
        figures["ingest.consumer_workers"] = (float(bcfg.features.consumer.workers), "actors")

        supervisor.start(bcfg)
        warm = _events(skus, 1, rng, f"{BENCH_USERS}{tag}-warm-")[0]
        producer.send_events([warm])
        ingested(warm, 60)   # the group has settled: freshness is not a join
        lags = []
        for i in range(freshness_samples):
            event = _events(skus, 1, rng, f"{BENCH_USERS}{tag}-fresh{i}-")[0]
            start = time.perf_counter()
            producer.send_events([event])
            lags.append((time.perf_counter() - start + ingested(event, 10)) * 1000)
        figures["ingest.freshness_p50_ms"] = (float(np.percentile(lags, 50)), "ms")
        figures["ingest.freshness_p95_ms"] = (float(np.percentile(lags, 95)), "ms")
    finally:
        supervisor.stop(bcfg)
        probe.close()
        store.delete_all()
        conn.execute("DELETE FROM events WHERE user_id LIKE %s", (f"{BENCH_USERS}{tag}-%",))
        conn.execute("DELETE FROM dead_letters WHERE topic = %s", (str(bcfg.services.kafka.topics.events),))
        conn.close()
    return figures
