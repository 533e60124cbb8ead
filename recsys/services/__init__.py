"""Start, stop and check the services recsys needs: Postgres+pgvector, Redis, the Kafka broker, Ray.

Each is embedded by default and external when its DSN / URL / address is configured.
"""

from __future__ import annotations

from recsys.services.base import Health
from recsys.services.kafka import Kafka
from recsys.services.postgres import Postgres
from recsys.services.ray_head import Ray
from recsys.services.redis_server import Redis
from recsys.services.web import Web

__all__ = ["Health", "Kafka", "Postgres", "Ray", "Redis", "Web", "all_services", "up", "down", "status"]


def all_services(cfg, with_ray: bool = True) -> list:
    services = [Postgres(cfg), Redis(cfg), Kafka(cfg)]
    return services + [Ray(cfg)] if with_ray else services


def up(cfg, with_ray: bool = True) -> list[Health]:
    """Idempotent: starts what is not running, then health-checks everything."""
    for service in all_services(cfg, with_ray):
        service.start()
    return status(cfg, with_ray)


def down(cfg, with_ray: bool = True) -> list[str]:
    """Stops what recsys started (never an external or pre-existing shared service). The consumers are
    actors of the Ray head and end with it."""
    stopped = ["web"] if Web(cfg).stop() else []   # the dashboard and store first: they use the rest
    for service in reversed(all_services(cfg, with_ray)):
        if service.stop():
            stopped.append(service.name)
    return stopped


def status(cfg, with_ray: bool = True) -> list[Health]:
    web = Web(cfg)   # listed when running: it is started by `make demo`, not by `services up`
    return [service.health() for service in all_services(cfg, with_ray)] + ([web.health()] if web.managed else [])
