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
from recsys.serve.graph import GRAPH
from recsys.serve.recommender import OverBudget
from recsys.services.ray_head import RAY_ENV

# The split ingress waits for stage calls from its request threads (`.result()`), which Serve
# allows only when the handles' router runs on a loop of its own.
SPLIT_INGRESS_ENV = {**RAY_ENV, "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1"}


def _quiet() -> None:
    import logging

    logging.getLogger("ray.serve").setLevel(logging.WARNING)


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
        stage_handles, ingress_env = None, RAY_ENV
    elif s.topology == "split":
        stage_handles = {
            stage.name: StageReplica.options(
                name=f"stage_{stage.name}",
                ray_actor_options={"num_cpus": float(d.num_cpus), "runtime_env": {"env_vars": RAY_ENV}},
                autoscaling_config=OmegaConf.to_container(d.autoscaling),
                max_ongoing_requests=int(d.max_ongoing_requests),
            ).bind(stage.name, cfg_dict)
            for stage in GRAPH for d in [s.stages[stage.name]]}
        ingress_env = SPLIT_INGRESS_ENV
    else:
        raise ValueError(f"serve.topology must be fused or split, not {s.topology!r}")
    ingress = RecsysApi.options(
        ray_actor_options={"num_cpus": float(s.replica_cpus), "runtime_env": {"env_vars": ingress_env}},
        autoscaling_config=OmegaConf.to_container(s.autoscaling),
        # Admission control: past max_ongoing_requests running and max_queued_requests waiting, a replica
        # answers 503 with Retry-After at once instead of queueing into seconds (conf/serve/fused.yaml).
        max_ongoing_requests=int(s.max_ongoing_requests),
        max_queued_requests=int(s.max_queued_requests),
        backpressure_config={"status_code": 503, "retry_after_s": float(s.retry_after_s)},
    )
    return ingress.bind(cfg_dict, stage_handles)


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
                 runtime_env={"env_vars": RAY_ENV})


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
    """Application builder for `serve run` / `serve deploy` / KubeRay RayService:
    `import_path: recsys.serve.app:app_builder`, `args: {overrides: ["serve=split", ...]}`."""
    from recsys.config import load_config

    return build_app(load_config(list(args.get("overrides", []))))
