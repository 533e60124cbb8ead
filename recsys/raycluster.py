"""Connect this process to Ray: the configured cluster, the head `recsys services up` started, or
(when neither answers) a local in-process cluster."""

from __future__ import annotations

import os


def ensure_ray(cfg, log_to_driver: bool = False) -> None:
    import ray

    from recsys.services.process import port_open
    from recsys.services.ray_head import RUNTIME_ENV, Ray, ray_env

    if ray.is_initialized():
        return
    os.environ.update(ray_env(cfg))   # an in-process cluster inherits it
    head = Ray(cfg)
    host, _, port = head.address.rpartition(":")
    address = head.address if head.external or port_open(host or "127.0.0.1", int(port)) else "local"
    kwargs = {"num_cpus": int(cfg.services.ray.num_cpus), "include_dashboard": False} if address == "local" else {}
    ray.init(address=address, logging_level="WARNING", log_to_driver=log_to_driver,
             runtime_env={"env_vars": RUNTIME_ENV}, **kwargs)
    # Ray's own helper processes (Train's placement-group cleaner, the state API) look the cluster
    # up again: name it, or they give up when a machine runs more than one.
    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
