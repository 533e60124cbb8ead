"""Shared fixtures: a real Postgres+pgvector, Kafka broker and Redis for the suite, on free ports and a
key prefix of its own so a running demo, another suite and the machine's shared Redis are never touched."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import uuid

import psycopg
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from recsys.config import load_config  # noqa: E402



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Ports of this session's own: two suites (or a suite and a demo) can run side by side.
STATE = tempfile.mkdtemp(prefix="recsys-test-")
PREFIX = f"recsys-test-{uuid.uuid4().hex[:8]}:"
TEST_OVERRIDES = [
    f"state_dir={STATE}",
    "data=small",
    "services.postgres.dsn=null",
    f"services.postgres.port={free_port()}",
    "services.kafka.bootstrap=null",
    f"services.kafka.port={free_port()}",
    "services.redis.url=redis://127.0.0.1:6379/15",
    f"services.redis.key_prefix={PREFIX}",
    "services.ray.address=null",
    f"services.ray.port={free_port()}",
    f"serve.port={free_port()}",
    "serve.autoscaling.min_replicas=1",
    f"services.ray.haproxy.metrics_port={free_port()}",
    f"services.ray.haproxy.stats_port={free_port()}",
    f"services.ray.haproxy.replica_http_ports={31000 + os.getpid() % 40 * 100}",   # a demo's are 30000-30099
    f"services.ray.haproxy.replica_grpc_ports={41000 + os.getpid() % 40 * 100}",
    "serve.ranker=blend",   # deterministic; the LTR ranker has its own test (test_rank_ltr.py)
    # a trained model goes live after its gates, with no canary: tests share one registry, and a canary
    # left by one would hold another's model back (the canary tests turn it on for themselves)
    "release.canary.enabled=false",
    "features.consumer.session_timeout_ms=2000",
    "features.consumer.heartbeat_interval_ms=500",
]


# Budgets and a deadline far past any stall of a busy test machine, no shedding: for tests about content, not time.
PATIENT = [f"serve.budgets_ms.{stage}=5000" for stage in ("features", "retrieval", "ranker", "slots")] + [
    "serve.budgets_ms.sources.default=5000", "serve.deadline_ms=30000", "serve.admission_max_lag_ms=0"]


def make_cfg(*extra: str):
    return load_config(TEST_OVERRIDES + list(extra))


@pytest.fixture(scope="session")
def cfg():
    return make_cfg()


@pytest.fixture(scope="session")
def stack(cfg):
    """Postgres, Redis and the broker up for the whole session; stopped and cleaned afterwards."""
    from recsys import services
    from recsys.features.online_store import OnlineStore

    services.up(cfg, with_ray=False)
    yield cfg
    OnlineStore.from_config(cfg).delete_all()
    services.down(cfg, with_ray=False)
    shutil.rmtree(STATE, ignore_errors=True)


@pytest.fixture(scope="session")
def world(stack):
    """The small synthetic world loaded and embedded, as `make demo` does at full size."""
    from recsys.catalog.embed import embed_catalog
    from recsys.data import load_world

    load_world(stack)
    embed_catalog(stack)
    return stack


@pytest.fixture
def pg(stack):
    from recsys.services import Postgres

    with psycopg.connect(Postgres(stack).dsn, autocommit=True) as conn:
        yield conn


@contextlib.contextmanager
def live_restored(pg, *kinds):
    """The live version of each kind as it was before the block (none: none live): a test that makes a
    model with made-up metrics live must not leave it there, or later tests' gates compare with it."""
    from recsys import registry
    from recsys.release.promote import make_live

    before = {kind: registry.live(pg, kind) for kind in kinds}
    try:
        yield
    finally:
        for kind, record in before.items():
            if record is None:
                pg.execute("UPDATE models SET stage = 'retired' WHERE kind = %s AND stage = 'live'", (kind,))
            else:
                make_live(pg, record.version)


@pytest.fixture
def no_live_rules(world):
    """No rule set live or in shadow before and after the test (one Postgres for the suite)."""
    from recsys.rules import store
    from recsys.services import Postgres

    def retire():
        with psycopg.connect(Postgres(world).dsn, autocommit=True) as conn:
            for state in ("live", "shadow"):
                current = store.in_state(conn, state)
                if current is not None:
                    store.archive(conn, current.version, "test:cleanup")
    retire()
    yield
    retire()
