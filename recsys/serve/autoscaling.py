"""Autoscaling signal and policy for the ingress deployment (conf/serve/cluster.yaml).

Serve's own signal is the number of requests a replica holds, sampled on the replica's event loop
every metrics interval. A recsys replica runs a request's pipeline in the request's thread (the event
loop) without yielding for most of it, so the sampler only ever runs between requests and reads ~0
whatever the load: measured on two nodes here, a replica shedding 503s at 150 req/s still reported 0
and Serve never added one.

So the ingress measures its own load, `busy`, and reports it since the previous report (Serve's custom
autoscaling metrics, `RecsysApi.record_autoscaling_stats`). It is the larger of two time averages:

- the requests inside the application (an ASGI middleware integrates their number over time): for a
  replica that runs one request at a time, the share of time it is busy, including time spent waiting
  for a core on a crowded machine;
- the replica process's CPU time per second of wall time: what the first misses, the HTTP parsing
  and Serve's own work around each request, and the replica's background threads (~0.03 at rest).

A replica holds the GIL for most of its work, so either is at most ~1. `BusyPolicy` asks for enough
replicas to bring the total back to `target` per replica (the default policy's rule on this signal);
Serve applies min/max_replicas, the upscale/downscale delays and factors on top.
"""

from __future__ import annotations

import logging
import threading
import time

BUSY = "busy"   # the custom metric's name: max(IN_APP, CPU)
IN_APP = "in_app"
CPU = "cpu"
BLIND_DECISIONS = 60   # ~30 s of the controller's decisions without `busy` before BusyPolicy warns


class LoadMeter:
    """Over the time between two `read()`s: the time average of the requests in flight, and the
    process's CPU seconds per second."""

    def __init__(self, clock=time.monotonic, cpu_clock=time.process_time):
        self._clock, self._cpu_clock = clock, cpu_clock
        self._lock = threading.Lock()
        self.in_flight = 0
        self._area = 0.0                 # integral of in_flight over time
        self._at = self._read_at = clock()
        self._read_area = 0.0
        self._read_cpu = cpu_clock()

    def reset(self) -> None:
        """The next read covers only the time from now (not, say, a replica's start-up work)."""
        with self._lock:
            now = self._clock()
            self._advance(now)
            self._read_at, self._read_area, self._read_cpu = now, self._area, self._cpu_clock()

    def _advance(self, now: float) -> None:
        self._area += self.in_flight * (now - self._at)
        self._at = now

    def enter(self) -> None:
        with self._lock:
            self._advance(self._clock())
            self.in_flight += 1

    def leave(self) -> None:
        with self._lock:
            self._advance(self._clock())
            self.in_flight -= 1

    def read(self) -> dict[str, float]:
        """{IN_APP, CPU, BUSY} since the previous read."""
        with self._lock:
            now, cpu = self._clock(), self._cpu_clock()
            self._advance(now)
            span = now - self._read_at
            in_app = (self._area - self._read_area) / span if span > 0 else float(self.in_flight)
            used = (cpu - self._read_cpu) / span if span > 0 else 0.0
            self._read_at, self._read_area, self._read_cpu = now, self._area, cpu
            return {IN_APP: in_app, CPU: used, BUSY: max(in_app, used)}


# One per process (a Serve replica is a process): the middleware and the replica's report share it.
METER = LoadMeter()


class MeteredApp:
    """Pure ASGI middleware: every HTTP request counts in the process's METER while the app handles it.
    It holds no state of its own, so the app it wraps can be pickled (`serve.ingress` freezes a copy)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        METER.enter()
        try:
            return await self.app(scope, receive, send)
        finally:
            METER.leave()


def ready() -> None:
    """A replica is about to serve: its first report starts here, without its start-up CPU (loading
    snapshots for seconds would read as a busy replica and ask for more)."""
    METER.reset()


def report() -> dict[str, float]:
    """What a replica reports to Serve (`record_autoscaling_stats`). Reads this module's METER by name:
    Serve ships the deployment class by value, so a METER the class's module imported would be a copy."""
    return METER.read()


def metered(app) -> bool:
    """Whether MeteredApp is on the FastAPI `app`."""
    return any(m.cls is MeteredApp for m in app.user_middleware)


def add_meter(app) -> bool:
    """MeteredApp on the FastAPI `app` (once), outermost of the middleware added so far. It must be on
    the app before `serve.ingress(app)` takes its copy, and before the app first serves: Starlette takes
    no middleware after that, so recsys/serve/api.py adds it where `api` is created. An app that already
    serves without it is an error, not a quiet False: a replica without the meter reports no `busy`,
    and BusyPolicy then keeps the replicas where they are whatever the load."""
    if metered(app):
        return True
    try:
        app.add_middleware(MeteredApp)
    except RuntimeError as e:
        raise RuntimeError(f"the autoscaling meter cannot be added to an app that already serves: {e}") from e
    return True


class BusyPolicy:
    """Serve autoscaling policy (`autoscaling.policy.policy_function: recsys.serve.autoscaling:BusyPolicy`,
    `policy_kwargs: {target: ...}`): desired replicas = the replicas' summed busy share / target.
    Until a replica has reported, the current target stands."""

    def __init__(self, target: float = 0.5):
        if not 0 < float(target):
            raise ValueError("target must be positive")
        self.target = float(target)
        self._blind = 0   # decisions in a row with replicas reporting but no busy among their metrics

    def __call__(self, ctx):
        metrics = ctx.aggregated_metrics or {}
        busy = metrics.get(BUSY) or {}
        if not busy:
            # Replicas that report (Serve's own count) but never `busy`, decision after decision: say so
            # once in the controller's log, since the replicas will not change whatever the load.
            self._blind = self._blind + 1 if metrics else 0
            if self._blind == BLIND_DECISIONS:
                logging.getLogger("ray.serve").warning(
                    "BusyPolicy: the replicas of %s report %s but no %r: autoscaling holds at %s replicas "
                    "(is the ingress metered? recsys/serve/autoscaling.py)",
                    getattr(ctx, "deployment_name", "?"), sorted(metrics), BUSY, ctx.target_num_replicas)
            return ctx.target_num_replicas, {}
        self._blind = 0
        return max(sum(busy.values()) / self.target, 0.0), {}

