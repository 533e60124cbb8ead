"""`recsys services`: idempotent start, health, Redis started only when none answers, clean stop."""

import os
import subprocess
import sys
import time

import psycopg
import pytest

from recsys import services
from recsys.services import Kafka, Postgres, Redis
from recsys.services.process import port_open
from tests.conftest import STATE, free_port, make_cfg


def postmaster_pid(cfg) -> int:
    return int((Postgres(cfg).data_dir / "postmaster.pid").read_text().split()[0])


def test_up_is_idempotent_and_healthy(stack, pg):
    before = postmaster_pid(stack)
    health = services.up(stack, with_ray=False)
    assert postmaster_pid(stack) == before                     # nothing restarted
    assert [h.name for h in health] == ["postgres", "redis", "kafka"] and all(h.ok for h in health)
    assert "pgvector 0.8" in health[0].detail
    assert set(stack.services.kafka.topics.values()) <= set(health[2].detail.replace(",", "").split()[1:])
    applied = [r[0] for r in pg.execute("SELECT name FROM schema_migrations ORDER BY version")]
    assert applied[0] == "001_init.sql"
    partitions = Kafka(stack)
    from confluent_kafka.admin import AdminClient
    meta = AdminClient({"bootstrap.servers": partitions.bootstrap}).list_topics(timeout=5)
    assert len(meta.topics["events"].partitions) == stack.services.kafka.partitions


def test_redis_is_started_when_none_answers_and_stopped_afterwards(stack):
    port = free_port()
    cfg = make_cfg(f"services.redis.url=redis://127.0.0.1:{port}/0")
    redis_service = Redis(cfg)
    assert not redis_service.health().ok
    redis_service.start()
    assert redis_service.health().ok and redis_service.health().managed
    redis_service.start()                                     # idempotent
    assert redis_service.stop() is True
    assert not port_open("127.0.0.1", port)
    assert Redis(stack).stop() is False                       # the shared instance is never stopped


def test_an_external_redis_that_does_not_answer_is_a_clear_error():
    service = Redis(make_cfg("services.redis.url=redis://redis.internal.example:6379/0"))
    service._ping = lambda: False                              # no packet leaves the machine
    with pytest.raises(ConnectionError, match="does not answer"):
        service.start()


def test_cli_down_leaves_no_process_behind():
    """A second, throwaway stack through the real CLI: up, status, down, nothing left listening."""
    pg_port, kafka_port = free_port(), free_port()
    state = os.path.join(STATE, "cli")
    overrides = [f"state_dir={state}", f"services.postgres.port={pg_port}", f"services.kafka.port={kafka_port}",
                 "services.postgres.dsn=null", "services.kafka.bootstrap=null",
                 "services.redis.url=redis://127.0.0.1:6379/15", "services.ray.address=null",
                 f"services.ray.port={free_port()}", "services.ray.object_store_bytes=100000000",
                 f"services.ray.dashboard_port={free_port()}"]
    overrides += [f"services.ray.agent_ports.{name}={free_port()}" for name in  # a demo's head may run too
                  ("dashboard_agent_listen_port", "dashboard_agent_grpc_port", "metrics_export_port",
                   "runtime_env_agent_port")]
    cli = [sys.executable, "-m", "recsys.cli"]
    env = dict(os.environ)
    try:
        up = subprocess.run(cli + ["services", "up", *overrides], capture_output=True, text=True, env=env, timeout=120)
        assert up.returncode == 0, up.stdout + up.stderr
        status = subprocess.run(cli + ["services", "status", *overrides], capture_output=True, text=True, env=env)
        assert status.returncode == 0, status.stdout
        for name in ("postgres", "redis", "kafka", "ray"):
            assert f"{name:<9} up" in status.stdout
    finally:  # a failed start must not leave what did start running
        down = subprocess.run(cli + ["services", "down", *overrides], capture_output=True, text=True, env=env)
    assert "postgres" in down.stdout and "kafka" in down.stdout and "ray" in down.stdout
    time.sleep(0.5)
    assert not port_open("127.0.0.1", pg_port) and not port_open("127.0.0.1", kafka_port)
    leftovers = subprocess.run(["pgrep", "-f", state], capture_output=True, text=True).stdout.split()
    assert leftovers == []
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/postgres", connect_timeout=1)


def test_each_head_gets_haproxy_files_and_ports_of_its_own():
    from recsys.services.ray_head import RAY_ENV, ray_env

    a = ray_env(make_cfg("services.ray.port=7001"))
    b = ray_env(make_cfg("services.ray.port=7002", "services.ray.haproxy.metrics_port=9999"))
    assert a["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and a.items() >= RAY_ENV.items()
    assert a["RAY_SERVE_HAPROXY_SOCKET_PATH"] != b["RAY_SERVE_HAPROXY_SOCKET_PATH"]
    assert len(a["RAY_SERVE_HAPROXY_SOCKET_PATH"]) < 100          # a Unix socket path has 108 bytes at most
    assert b["RAY_SERVE_HAPROXY_METRICS_PORT"] == "9999"
    assert ray_env(make_cfg("services.ray.haproxy.enabled=false")) == RAY_ENV
