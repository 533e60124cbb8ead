"""Binds the Ray Serve application: the FastAPI ingress over the recommendation pipeline.

Topology `fused` runs every stage in one replica (the right shape for a small machine: each extra
deployment hop costs several ms here, see shared/STACK-NOTES.md).
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf
from ray import serve

from recsys.serve.api import api, set_recommender
from recsys.services.ray_head import RAY_ENV



@serve.deployment(name="recsys_api")
@serve.ingress(api)
class RecsysApi:
    """One replica: features, candidate sources, blending and slot filling in-process."""

    def __init__(self, cfg_dict: dict):
        import logging

        from recsys.serve.recommender import Recommender

        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        set_recommender(Recommender(OmegaConf.create(cfg_dict)))


def build_app(cfg):
    s = cfg.serve
    deployment = RecsysApi.options(
        ray_actor_options={"num_cpus": float(s.replica_cpus), "runtime_env": {"env_vars": RAY_ENV}},
        autoscaling_config=OmegaConf.to_container(s.autoscaling),
        max_ongoing_requests=int(s.max_ongoing_requests),
    )
    return deployment.bind(OmegaConf.to_container(cfg, resolve=True))


def connect(cfg) -> None:
    import ray

    from recsys.services import Ray

    os.environ.update(RAY_ENV)
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
    `import_path: recsys.serve.app:app_builder`, `args: {overrides: ["serve.port=8000", ...]}`."""
    from recsys.config import load_config

    return build_app(load_config(list(args.get("overrides", []))))
