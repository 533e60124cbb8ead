"""Binds the Ray Serve application for either topology (`serve.topology`).

- `fused`: one deployment, the FastAPI ingress running every stage in-process. The right shape for a
  small machine: each extra deployment hop costs several ms here (shared/STACK-NOTES.md).
- `split`: the ingress (HTTP, response cache, composition) plus one deployment per stage, each with
  its own autoscaling_config, called through DeploymentHandles within the stage's time budget. The
  shape for a cluster, where stages scale apart (a GPU ranker, many retrieval replicas).

The composition is the same Recommender in both: only the stage callers differ.
"""

from __future__ import annotations

import copy
import os

from omegaconf import OmegaConf, open_dict
from ray import serve

from recsys.config import CONF_DIR
from recsys.serve.api import api, set_recommender
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
    """The HTTP ingress. Fused: every stage in this replica. Split: stage handles passed in."""

    def __init__(self, cfg_dict: dict, stage_handles: dict | None = None):
        from recsys.serve.recommender import Recommender

        _quiet()
        stages = {name: RemoteStage(h) for name, h in stage_handles.items()} if stage_handles else None
        set_recommender(Recommender(OmegaConf.create(cfg_dict), stages=stages))


@serve.deployment
class StageReplica:
    """One pipeline stage in replicas of its own (topology split)."""

    def __init__(self, name: str, cfg_dict: dict):
        from recsys.serve.resources import Resources
        from recsys.serve.stages import build_stage

        _quiet()
        cfg = OmegaConf.create(cfg_dict)
        self.stage = build_stage(name, cfg, Resources(cfg))

    def __call__(self, method: str, *args):
        return getattr(self.stage, method)(*args)


class RemoteStage:
    """Calls a stage's deployment within the stage's budget; an overrun is cancelled."""

    def __init__(self, handle):
        self.handle = handle

    def call(self, method: str, budget_s: float, *args):
        response = self.handle.remote(method, *args)
        try:
            return response.result(timeout_s=budget_s)
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
            name: StageReplica.options(
                name=f"stage_{name}",
                ray_actor_options={"num_cpus": float(d.num_cpus), "runtime_env": {"env_vars": RAY_ENV}},
                autoscaling_config=OmegaConf.to_container(d.autoscaling),
                max_ongoing_requests=int(d.max_ongoing_requests),
            ).bind(name, cfg_dict)
            for name, d in s.stages.items()}
        ingress_env = SPLIT_INGRESS_ENV
    else:
        raise ValueError(f"serve.topology must be fused or split, not {s.topology!r}")
    ingress = RecsysApi.options(
        ray_actor_options={"num_cpus": float(s.replica_cpus), "runtime_env": {"env_vars": ingress_env}},
        autoscaling_config=OmegaConf.to_container(s.autoscaling),
        max_ongoing_requests=int(s.max_ongoing_requests),
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
