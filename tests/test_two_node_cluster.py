"""A real Ray cluster, not only a head: two Ray nodes on this machine (recsys.services.local_cluster) —
the head (`ray start --head`, custom resource `head_node`) and a worker node (`ray start --address`,
resource `worker_node`), 2 logical CPUs each — and on it

- the two-tower training step of the pipeline (fit_on_ray) with its two Ray Train workers spread one
  per node (`pipeline.placement_strategy=STRICT_SPREAD`);
- the Serve application as conf/serve/cluster.yaml shapes it (here 1-2 replicas, one per node at most,
  HAProxy on the head), which a load ramp scales out to a replica on each node and back in after it;
- requests answered while the worker node is killed (SIGKILL of all its processes at once).

Everything the module starts (both nodes' processes and their temp dirs) is stopped and removed
afterwards, whatever happened; no other Ray on the machine is touched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time

import psycopg
import pytest

from tests.conftest import PATIENT, make_cfg

SURFACES = ("homepage_hero", "pdp_fbt", "cart_upsell")
# conf/serve/cluster.yaml at this test's scale: 1 to 2 replicas, one a node; the small world's misses
# cost ~2-4 ms of a replica's time, so the busy target is lowered to 0.15 for the ramp's 150 req/s (busy
# ~0.28 on a 2-core dev machine, more on a slower one; 100 req/s read ~0.19, too close to the target on a
# faster machine) to need a second replica and 5 req/s (~0.02-0.05 a replica, most of it its background
# threads) one;
# a short downscale delay; the response cache off (every request runs the pipeline); PATIENT: no
# shedding on event-loop lag and budgets far past any stall, since a busy CI machine is not overload.
SERVE = ["serve=cluster", "serve.autoscaling.min_replicas=1", "serve.autoscaling.max_replicas=2",
         "serve.max_replicas_per_node=1", "serve.autoscaling.policy.policy_kwargs.target=0.15",
         "serve.autoscaling.downscale_delay_s=5", *(f"surfaces.{s}.cache_ttl_s=0" for s in SURFACES), *PATIENT]
RAMP = [(5.0, 5.0), (150.0, 25.0), (5.0, 5.0)]   # (req/s, seconds); then 5 req/s until back at 1 replica
TAIL_MAX_S = 45.0
TRAIN = ["model.epochs=1", "model.dim=16", "pipeline.num_workers=2", "pipeline.cpus_per_worker=0.25",
         "pipeline.placement_strategy=STRICT_SPREAD"]
# A replica replaced by a redeploy stops taking requests from HAProxy for at least 30 s (Serve's default)
# before it goes: 2 s here, so the last test's redeploy takes seconds, not a minute.
FAST_DRAIN = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}
KILL_RATE, KILL_BEFORE_S, KILL_AFTER_S = 30.0, 5.0, 25.0
FAILURE_WINDOW_S = 10.0   # failed requests are allowed only in this long after the worker node is killed


@pytest.fixture(scope="module")
def cluster(world):
    import ray

    from recsys.bench.autoscale import connect
    from recsys.services.local_cluster import LocalCluster, free_port, head_overrides

    environ = dict(os.environ)
    if ray.is_initialized():   # e.g. the world fixture's in-process Ray (Ray Data embedding)
        ray.shutdown()
    overrides = [*head_overrides(), f"serve.port={free_port()}", *SERVE]
    cfg = make_cfg(*overrides)
    root = tempfile.mkdtemp(prefix="rc-", dir="/tmp")   # short: Ray's sockets live under it
    local = LocalCluster(cfg, root, workers=1, cpus=2, env=FAST_DRAIN)
    started = time.monotonic()
    try:
        local.start()
        connect(local, cfg)
        print(f"\n  two Ray nodes up in {time.monotonic() - started:.1f} s: {local.node_ids()}")
        yield local, cfg, overrides
    finally:
        try:
            ray.shutdown()   # no serve.shutdown(): the nodes go anyway, and it waits 30 s for a dead node
        finally:
            local.stop()
            os.environ.clear()
            os.environ.update(environ)
            shutil.rmtree(root, ignore_errors=True)


def test_two_nodes_each_with_its_own_resource(cluster):
    local, _, _ = cluster
    ids = local.node_ids()
    assert set(ids) == {"head_node", "worker_node"} and ids["head_node"] != ids["worker_node"]


def test_training_runs_a_ray_train_worker_on_each_node(cluster):
    """The pipeline's two-tower step (fit_on_ray) on the small world, its workers spread over the nodes."""
    import numpy as np
    from omegaconf import OmegaConf
    from ray.util.state import list_actors

    from recsys.services import Postgres
    from recsys.train import dataset
    from recsys.train.ray_train import fit_on_ray

    local, _, _ = cluster
    cfg = make_cfg(*TRAIN)
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        catalog = dataset.read_catalog(conn)
        events = dataset.read_events(conn)
    data = dataset.sequences(events, catalog.index, float(cfg.pipeline.holdout_days))
    storage = tempfile.mkdtemp(prefix="rc-train-")
    started = time.monotonic()
    try:
        model, metrics = fit_on_ray(data.train, data.train_ts, catalog.item_features(),
                                    OmegaConf.to_container(cfg.model, resolve=True), None, cfg.pipeline,
                                    storage, "two-tower-two-nodes")
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    print(f"\n  two-tower, one epoch on two nodes: {time.monotonic() - started:.1f} s, loss {metrics['loss']:.4f}")
    assert metrics["epoch"] == 1 and np.isfinite(metrics["loss"]) and not model.training
    workers = list_actors(filters=[("class_name", "=", "RayTrainWorker")], limit=100)
    assert len(workers) == 2
    assert sorted(w.node_id for w in workers) == sorted(local.node_ids().values())


def _paths(cfg, n: int) -> list[str]:
    from recsys.bench.autoscale import mixed_paths

    return mixed_paths(cfg, n, seed=7)


def test_serve_scales_out_to_a_replica_on_each_node_under_a_ramp_and_back_in(cluster):
    from recsys.bench.autoscale import Ramp, deploy_on, ramp_once, running_replicas

    local, cfg, _ = cluster
    app_name = cfg.serve.app_name
    started = time.monotonic()
    url = deploy_on(cfg)
    print(f"\n  deployed in {time.monotonic() - started:.1f} s")
    assert running_replicas(app_name) == 1
    ramp = Ramp(url, _paths(cfg, 2000), concurrency=64, timeout_s=5.0)
    run = ramp_once(ramp, app_name, RAMP, 1, TAIL_MAX_S, interval_s=0.5)
    for w in run.windows(5.0):
        print(w.line())
    counts = [c for _, c in run.samples]
    print(f"  replicas over time: {run.samples[::4]}")
    assert max(counts) == 2, counts                               # up to the configured maximum...
    spread = [nodes for nodes in run.nodes if len(nodes) == 2]
    assert spread and sorted(spread[0].values()) == sorted(local.node_ids().values())   # ...one on each node
    assert counts[-1] == 1, counts                                # ...and back to the minimum after the ramp
    # Under the surge a replica may refuse what it cannot queue (503 with Retry-After, by design); nothing
    # else fails, and at the low rates before and after it nothing fails at all.
    failed = [a for a in run.answers if not a.ok]
    assert all(a.shed for a in failed), sorted({a.status for a in failed if not a.shed})
    assert not [a for a in failed if a.step != 1], "failures at 5 req/s"


def test_requests_are_answered_while_the_worker_node_dies(cluster):
    from ray import serve

    from recsys.bench.autoscale import Ramp, deploy_on, replica_nodes, wait_for_replicas
    from recsys.services.local_cluster import WORKER

    local, cfg, overrides = cluster
    app_name = cfg.serve.app_name
    started = time.monotonic()
    url = deploy_on(make_cfg(*overrides, "serve.autoscaling.min_replicas=2"))   # a replica on each node
    print(f"\n  redeployed in {time.monotonic() - started:.1f} s")
    assert wait_for_replicas(app_name, 2, 120)
    deadline = time.monotonic() + 60
    while len(replica_nodes(app_name)) != 2 and time.monotonic() < deadline:   # the old one stopping
        time.sleep(0.5)
    print(f"  two replicas after {time.monotonic() - started:.1f} s")
    assert sorted(replica_nodes(app_name).values()) == sorted(local.node_ids().values())
    ramp = Ramp(url, _paths(cfg, 2000), concurrency=32, timeout_s=5.0)
    result, killed_at = {}, {}

    def load() -> None:
        result["run"] = ramp.run([(KILL_RATE, KILL_BEFORE_S + KILL_AFTER_S)])

    thread = threading.Thread(target=load, daemon=True)
    began = time.monotonic()
    thread.start()
    time.sleep(KILL_BEFORE_S)
    killed_at["s"] = time.monotonic() - began
    assert local.kill_node(WORKER) > 0
    thread.join(KILL_AFTER_S + 60)
    answers = result["run"].answers
    kill_s = killed_at["s"]
    # Unanswered: no replica answered (a connection error, a time-out, HAProxy's own 503). A replica's
    # 503 with Retry-After is an answer: load it refused, which a busy machine can cause at any time.
    failed = [a for a in answers if not a.ok and not a.shed]
    shed = [a for a in answers if a.shed]
    late = [a for a in failed if a.at_s > kill_s + FAILURE_WINDOW_S]
    window = max((a.at_s - kill_s for a in failed), default=0.0)
    print(f"\n  {len(answers)} requests at {KILL_RATE:g} req/s, worker node killed at {kill_s:.1f} s: "
          f"{len(failed)} unanswered, the last {window:.1f} s after the kill; {len(shed)} refused (503)")
    assert not [a for a in failed if a.at_s < kill_s - 0.5], "unanswered requests before the kill"
    assert not late, f"{len(late)} requests unanswered more than {FAILURE_WINDOW_S:g} s after the kill"
    after = [a for a in answers if a.at_s > kill_s + FAILURE_WINDOW_S]
    assert len(after) > KILL_RATE * 5 and sum(a.ok for a in after) >= 0.9 * len(after)
    assert len(failed) <= KILL_RATE * FAILURE_WINDOW_S * 0.5       # at most half of the window's requests
    status = serve.status().applications[app_name].deployments["recsys_api"].replica_states
    assert status.get("RUNNING", 0) >= 1, status                   # the head's replica still serves
    deadline = time.monotonic() + 60
    while local.node_ids().keys() != {"head_node"} and time.monotonic() < deadline:   # Ray sees the node go
        time.sleep(1)
    assert local.node_ids().keys() == {"head_node"}

