"""Binds the Ray Serve application for either topology (`serve.topology`).

- `fused`: one deployment, the FastAPI ingress running every stage in-process. The right shape for a
  small machine: each extra deployment hop costs several ms here (shared/STACK-NOTES.md).
- `split`: the ingress (HTTP, composition) plus one deployment per stage of recsys/serve/graph.py,
  each with its own autoscaling_config, called through DeploymentHandles within the stage's time
  budget. The shape for a cluster, where stages scale apart (a GPU ranker, many retrieval replicas).

The composition is the same Recommender over the same graph in both: only the stage callers differ.
"""

from __future__ import annotations

import copy
import os

from omegaconf import OmegaConf, open_dict
from ray import serve

from recsys.config import CONF_DIR
from recsys.serve.api import api, set_recommender
from recsys.serve.autoscaling import metered
from recsys.serve.graph import GRAPH
from recsys.serve.recommender import OverBudget
from recsys.services.ray_head import RUNTIME_ENV

# The split ingress waits for stage calls from its request threads (`.result()`), which Serve
# allows only when the handles' router runs on a loop of its own.
SPLIT_INGRESS_ENV = {**RUNTIME_ENV, "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1"}
# Per deployment, so that it holds however the application is deployed (`deploy`, `serve deploy`, a
# RayService): no access log line per request, warnings and worse only.
REPLICA_LOGGING = {"log_level": "WARNING", "enable_access_log": False}


def _quiet() -> None:
    import logging

    logging.getLogger("ray.serve").setLevel(logging.WARNING)


# The load autoscaling sees (recsys/serve/autoscaling.py) is counted by a middleware that must be on the
# app before serve.ingress takes its copy of it: recsys/serve/api.py puts it there when it creates `api`.
if not metered(api):
    raise RuntimeError("recsys.serve.api.api carries no autoscaling meter (MeteredApp)")


@serve.deployment(name="recsys_api")
@serve.ingress(api)
class RecsysApi:
    """The HTTP ingress. Fused: every stage in this replica. Split: a handle per stage passed in."""

    def __init__(self, cfg_dict: dict, stage_handles: dict | None = None):
        from recsys.serve.recommender import Recommender

        _quiet()
        cfg = OmegaConf.create(cfg_dict)
        calls = None
        if stage_handles:
            calls = {name: RemoteStage(handle, float(cfg.serve.budgets_ms[name]) / 1000)
                     for name, handle in stage_handles.items()}
        set_recommender(Recommender(cfg, stages=calls))
        from recsys.serve.autoscaling import ready

        ready()   # the autoscaling signal starts now, not at the process's start-up

    async def record_autoscaling_stats(self) -> dict:
        """Serve's custom autoscaling metric: requests inside the app, averaged since the last report."""
        from recsys.serve.autoscaling import report

        return report()


@serve.deployment
class StageReplica:
    """One stage of recsys/serve/graph.py in replicas of its own (topology split): a call runs the
    stage's declared method."""

    def __init__(self, name: str, cfg_dict: dict):
        from recsys.serve.graph import GRAPH
        from recsys.serve.resources import Resources

        _quiet()
        cfg = OmegaConf.create(cfg_dict)
        stage = next(s for s in GRAPH if s.name == name)
        self.method = stage.bind(stage.build(cfg, Resources(cfg)))

    def __call__(self, *args):
        return self.method(*args)


class RemoteStage:
    """Calls a stage's deployment within the stage's budget; an overrun is cancelled."""

    def __init__(self, handle, budget_s: float):
        self.handle, self.budget_s = handle, budget_s

    def __call__(self, *args):
        response = self.handle.remote(*args)
        try:
            return response.result(timeout_s=self.budget_s)
        except TimeoutError:
            response.cancel()
            raise OverBudget from None


def build_app(cfg):
    s = cfg.serve
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    if s.topology == "fused":
        stage_handles, ingress_env = None, RUNTIME_ENV
    elif s.topology == "split":
        stage_handles = {
            stage.name: StageReplica.options(
                name=f"stage_{stage.name}",
                ray_actor_options={"num_cpus": float(d.num_cpus), "runtime_env": {"env_vars": RUNTIME_ENV}},
                autoscaling_config=OmegaConf.to_container(d.autoscaling),
                max_ongoing_requests=int(d.max_ongoing_requests),
                logging_config=REPLICA_LOGGING,
                **_per_node(d),
            ).bind(stage.name, cfg_dict)
            for stage in GRAPH for d in [s.stages[stage.name]]}
        ingress_env = SPLIT_INGRESS_ENV
    else:
        raise ValueError(f"serve.topology must be fused or split, not {s.topology!r}")
    ingress = RecsysApi.options(
        ray_actor_options={"num_cpus": float(s.replica_cpus), "runtime_env": {"env_vars": ingress_env}},
        logging_config=REPLICA_LOGGING,
        autoscaling_config=OmegaConf.to_container(s.autoscaling),
        # Admission control: past max_ongoing_requests running and max_queued_requests waiting, a replica
        # answers 503 with Retry-After at once instead of queueing into seconds (conf/serve/fused.yaml).
        max_ongoing_requests=int(s.max_ongoing_requests),
        max_queued_requests=int(s.max_queued_requests),
        backpressure_config={"status_code": 503, "retry_after_s": float(s.retry_after_s)},
        **_per_node(s),
    )
    return ingress.bind(cfg_dict, stage_handles)


def _per_node(options) -> dict:
    """`max_replicas_per_node` when configured: on a cluster, so that losing a node loses only its share."""
    limit = options.get("max_replicas_per_node")
    return {"max_replicas_per_node": int(limit)} if limit else {}


def with_topology(cfg, topology: str):
    """`cfg` served in another topology, keeping its other settings: split.yaml is a delta over fused.yaml."""
    if topology == cfg.serve.topology:
        return cfg
    delta = OmegaConf.load(CONF_DIR / "serve" / "split.yaml") if topology == "split" else {"topology": topology}
    delta.pop("defaults", None)
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.serve = OmegaConf.merge(out.serve, delta)
    return out


def connect(cfg) -> None:
    import ray

    from recsys.services import Ray
    from recsys.services.ray_head import ray_env

    os.environ.update(ray_env(cfg))
    if not ray.is_initialized():
        ray.init(address=Ray(cfg).address, logging_level="WARNING", log_to_driver=False,
                 runtime_env={"env_vars": RUNTIME_ENV})


def deploy(cfg) -> str:
    """Deploy (or update) the application on the Ray cluster; returns its base URL."""
    connect(cfg)
    s = cfg.serve
    serve.start(http_options={"host": s.host, "port": int(s.port)},
                logging_config={"log_level": "WARNING", "enable_access_log": False})
    serve.run(build_app(cfg), name=s.app_name, route_prefix=s.route_prefix, blocking=False)
    return f"http://{s.host}:{s.port}"


def shutdown(cfg) -> None:
    connect(cfg)
    serve.delete(cfg.serve.app_name)


def app_builder(args: dict):
    """Application builder for `serve run` / `serve deploy`: `import_path: recsys.serve.app:app_builder`,
    `args: {overrides: ["serve=split", ...]}` (or one string of space-separated overrides, as
    `serve run recsys.serve.app:app_builder overrides="serve=cluster"` passes it)."""
    from recsys.config import load_config

    overrides = args.get("overrides") or []
    return build_app(load_config(overrides.split() if isinstance(overrides, str) else list(overrides)))


CLUSTER_OVERRIDES = ["serve=cluster"]


def __getattr__(name: str):
    """`recsys.serve.app:cluster_app`, the application as conf/serve/cluster.yaml shapes it (autoscaled,
    spread over nodes), built when first asked for. `serve build` takes an Application, not a builder:
    `serve build recsys.serve.app:cluster_app -o cluster/serve-config.yaml` wrote the Serve config the
    RayService deploys (tests/test_cluster_specs.py holds both to a fresh build)."""
    if name == "cluster_app":
        from recsys.config import load_config

        return build_app(load_config(CLUSTER_OVERRIDES))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
