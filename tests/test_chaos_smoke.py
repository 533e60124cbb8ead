"""The chaos harness's bookkeeping (recsys/bench/chaos.py) on the suite's own services, in seconds: the
mixed open-loop load over real HTTP (uvicorn serving the API in this process), a feature consumer in a
thread, one cheap fault (the consumer stopped, then started again), and the counts: accepted, logged,
lost, duplicates, recovery. `make bench` runs the same code against real faults (recsys bench --only chaos)."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest

from recsys.bench.chaos import Fault, MixedLoad, Timing, count_events, logged_events, run_fault
from recsys.bench.requests import sample_paths
from recsys.services import Kafka, Postgres
from tests.conftest import PATIENT, free_port, make_cfg

SURFACES = ("homepage_hero", "pdp_fbt", "cart_upsell")


@pytest.fixture(scope="module")
def served(world):
    """The API over HTTP on a free loopback port, with topics of this module's own, and a storefront key."""
    import uvicorn

    from recsys.serve.api import api, set_recommender
    from recsys.serve.recommender import Recommender

    tag = uuid.uuid4().hex[:8]
    cfg = make_cfg(*PATIENT, f"services.kafka.topics.events=chaos.events.{tag}",
                   f"services.kafka.topics.dlq=chaos.dlq.{tag}", f"services.kafka.topics.impressions=chaos.imp.{tag}",
                   "features.consumer.poll_timeout_s=0.05")
    Kafka(cfg).create_topics()
    set_recommender(Recommender(cfg))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.started, "uvicorn did not start"
    key = None
    try:
        from recsys.auth import create_key

        with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
            key = create_key(conn, "storefront", f"chaos-smoke-{tag}")[1]
    except ImportError:
        pass
    dsn = Postgres(cfg).dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        paths = {s: sample_paths(conn, s, 40, seed=3) for s in SURFACES}
        skus = [r[0] for r in conn.execute("SELECT sku FROM items ORDER BY sku LIMIT 100")]
    yield cfg, f"http://127.0.0.1:{port}", dsn, paths, skus, key
    server.should_exit = True
    thread.join(10)
    with psycopg.connect(dsn, autocommit=True) as conn:   # the suite's log is shared: a duplicate row planted
        conn.execute("DELETE FROM events WHERE user_id LIKE 'chaos-%'")   # here would break others' parity
        conn.execute("DELETE FROM impressions WHERE user_id LIKE 'chaos-%'")


class ConsumerThread:
    """The feature consumer in a thread: stop() is the cheap fault, start() the restore."""

    def __init__(self, cfg):
        self.cfg, self.flag, self.thread = cfg, threading.Event(), None

    def start(self) -> None:
        from recsys.features.consumer import run_consumer

        self.flag = threading.Event()
        self.thread = threading.Thread(target=run_consumer, args=(self.cfg,), kwargs={"stop": self.flag.is_set},
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.flag.set()
        self.thread.join(30)


def test_a_consumer_restart_under_mixed_load_loses_and_duplicates_nothing(served):
    cfg, url, dsn, paths, skus, key = served
    consumer = ConsumerThread(cfg)
    consumer.start()
    try:
        fault = Fault("consumer_restart", consumer.stop, consumer.start)
        timing = Timing(before_s=2, fault_s=2, after_s=3, recover_timeout_s=40, settle_s=5, fresh_s=2, burst=200)
        lines = []
        result = run_fault(fault, url, dsn, paths, skus, uuid.uuid4().hex[:8], 20, timing, key, 0.3, 10,
                           log=lines.append)
    finally:
        consumer.stop()
    assert lines and "consumer_restart" in lines[0]
    assert result.requests >= 100 and result.gets > 0 and result.posts > 0
    assert result.get_non_2xx == 0 and result.post_non_2xx == 0, result
    assert result.accepted >= 200 and result.logged == result.accepted, result
    assert result.lost == 0 and result.duplicates == 0 and result.unacknowledged_logged == 0, result
    assert result.recovered and 0 <= result.recover_s < 40, result
    # events accepted while the consumer was stopped reached the log only after the restart: a backlog
    assert result.recover_s > 0
    figures = result.figures()
    assert figures["chaos.consumer_restart.events_lost"] == (0, "events")
    assert figures["chaos.consumer_restart.get_non_2xx"] == (0, "answers")


def test_the_counts_see_duplicates_and_losses(served):
    """The log queries themselves: a row repeated under another ts is a duplicate; an accepted id that
    never arrives is lost (by set difference)."""
    cfg, url, dsn, paths, skus, key = served
    prefix = f"chaos-count-{uuid.uuid4().hex[:6]}-"
    load = MixedLoad(url, paths, skus, rate=1, max_s=1, prefix=prefix, key=key)
    event = load.event()
    with psycopg.connect(dsn, autocommit=True) as conn:   # the same event twice, a second apart
        for offset_s in (0, 1):
            conn.execute("INSERT INTO events (event_id, type, user_id, sku, ts) VALUES (%s, %s, %s, %s, "
                         "now() - interval '1 hour' + make_interval(secs => %s)) ON CONFLICT DO NOTHING",
                         (event["event_id"], event["type"], event["user_id"], event["sku"], offset_s))
    rows, distinct = count_events(dsn, prefix)
    logged, all_rows = logged_events(dsn, prefix)
    if rows == 1:   # a log keyed by event_id alone refuses the second row: no duplicate is possible
        assert distinct == 1 and all_rows == 1
    else:
        assert (rows, distinct) == (2, 1) and all_rows - len(logged) == 1
    assert {event["event_id"], "never-logged"} - set(logged) == {"never-logged"}
    with pytest.raises(ValueError):
        MixedLoad("http://10.0.0.1:8000", paths, skus, 1, 1, prefix)


def test_the_soak_bookkeeping_in_seconds(served, tmp_path, capsys):
    """recsys/bench/soak.py with two 3-second "minutes" at 15 req/s (no saturation figure in an empty
    docs folder: bench.soak_rate): the per-minute rows, the errors, the events in the log, memory per
    process group."""
    import copy

    from recsys.bench.soak import bench_soak

    cfg, url, dsn, paths, skus, key = served
    scfg = copy.deepcopy(cfg)
    scfg.bench.soak_minutes, scfg.bench.soak_rate, scfg.bench.soak_rate_fraction = 2, 15, 1.0
    consumer = ConsumerThread(scfg)
    consumer.start()
    try:
        figures = bench_soak(scfg, url, docs=tmp_path, minute_s=3)
    finally:
        consumer.stop()
    out = capsys.readouterr().out
    assert "p95_ms" in out and ("every target met" in out or "targets missed" in out)
    assert figures["soak.rate_rps"] == (15, "req/s") and figures["soak.minutes"] == (2, "min")
    assert 60 <= figures["soak.requests"][0] <= 100
    assert figures["soak.errors"] == (0, "answers") and figures["soak.events_lost"] == (0, "events")
    assert figures["soak.events_accepted"][0] > 0 and figures["soak.p95_first_min_ms"][0] > 0
    assert "soak.rss_growth_pct.postgres" in figures and "soak.rss_growth_pct.broker" in figures
    assert "soak.redis_memory_growth_pct" in figures
