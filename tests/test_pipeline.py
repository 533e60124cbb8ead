"""The training pipeline end to end on the small world, submitted as a Ray job to a real local head."""

import json
import os
import subprocess
import sys
import time

import psycopg
import pytest

from recsys import registry
from recsys.catalog import vectors
from recsys.services import Postgres, Ray
from recsys.train.user_vectors import UserVectorStore
from recsys.features.online_store import OnlineStore
from tests.conftest import TEST_OVERRIDES, free_port, make_cfg

TINY = ["model.epochs=2", "model.dim=32", "pipeline.eval_users=200", "pipeline.valid_users=100",
        "pipeline.num_workers=2", "pipeline.cpus_per_worker=0.25"]


@pytest.fixture(scope="module")
def head(world):
    """A Ray head with its job server, on ports of the test's own."""
    overrides = [f"services.ray.port={free_port()}", f"services.ray.dashboard_port={free_port()}",
                 "services.ray.object_store_bytes=200000000"]
    overrides += [f"services.ray.agent_ports.{name}={free_port()}" for name in
                  ("dashboard_agent_listen_port", "dashboard_agent_grpc_port", "metrics_export_port",
                   "runtime_env_agent_port")]
    cfg = make_cfg(*overrides)
    ray_head = Ray(cfg)
    ray_head.start()
    yield cfg, overrides
    ray_head.stop()


def test_pipeline_as_a_ray_job(head):
    cfg, overrides = head
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    args = [a for a in TEST_OVERRIDES + overrides + TINY]
    started = time.monotonic()
    while True:  # right after `ray start` the job server may have no agent yet: it says so, retry
        job = subprocess.run(
            [ray_cli, "job", "submit", "--address", Ray(cfg).job_address, "--working-dir", ".",
             "--", "python", "-m", "recsys.train.pipeline", *args],
            capture_output=True, text=True, timeout=600, cwd=os.path.dirname(os.path.dirname(__file__)),
            env={**os.environ, "RAY_ADDRESS": ""})
        output = job.stdout + job.stderr
        if "No available agent" not in output or time.monotonic() - started > 90:
            break
        time.sleep(3)
    assert job.returncode == 0, output[-4000:]
    assert "two-tower epoch  1" in output                         # progress is visible while it runs
    assert time.monotonic() - started < 300
    result = json.loads([line for line in output.splitlines() if line.startswith('{"version"')][-1])
    assert result["promoted"] and result["onnx_item_max_abs_diff"] < 1e-4 and result["onnx_user_max_abs_diff"] < 1e-4
    for model in ("popularity", "als", "two_tower", "content"):
        assert 0 <= result[f"{model}.ndcg@12"] <= 1 and 0 <= result[f"{model}.recall@120"] <= 1
    assert result["ann.recall_vs_exact@120"] >= 0.9

    with psycopg.connect(Postgres(cfg).dsn) as conn:
        live = registry.live(conn, "two_tower")
        assert live.version == result["version"] and os.path.exists(os.path.join(live.artifact_uri, "item_tower.onnx"))
        assert registry.live(conn, "als") is not None
        assert vectors.live_version(conn, "retrieval") == (result["version"], 32)
        user = conn.execute("SELECT user_id FROM events WHERE user_id ~ '^u[0-9]+$' ORDER BY ts DESC LIMIT 1").fetchone()[0]
    store = UserVectorStore(OnlineStore.from_config(cfg).r, cfg.services.redis.key_prefix)
    vec, _ = store.get_user(user, result["version"])
    assert vec.shape == (32,)
    name, centroid = store.cohort(result["version"], "never-seen-device", None, None)
    assert name == "*|*|*" and centroid.shape == (32,)
