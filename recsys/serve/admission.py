"""Admission control for a replica whose recommendation requests run on its event loop.

The recommendations endpoint runs on the replica's event loop (no thread hop: recsys/serve/api.py), so
while one request computes, the next ones wait in the server's buffers, where Ray Serve's
max_queued_requests cannot count them. The loop's own lag says how long they wait: a probe sleeps
`PROBE_S` and measures how late it woke. While that lag is above `serve.admission_max_lag_ms`, new
recommendation requests are answered 503 with Retry-After at once, instead of queueing into seconds.
Event intake is never shed here: it has its own rate limit, and a refused event costs a retry.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from recsys.serve.limits import refuse

PROBE_S = 0.01
SHED_PATH = "/v1/recommendations/"


class LoopLagAdmission:
    """ASGI middleware. `limits()` gives (max lag in seconds, Retry-After seconds), or None: admit all."""

    def __init__(self, app, limits: Callable[[], tuple[float, int] | None]):
        self.app, self.limits = app, limits
        self.lag_s = 0.0
        self.shed = 0
        self._probe: asyncio.Task | None = None

    async def __call__(self, scope, receive, send):
        limits = self.limits() if scope["type"] == "http" and scope["path"].startswith(SHED_PATH) else None
        if limits is not None:
            if self._probe is None or self._probe.done():
                self._probe = asyncio.get_running_loop().create_task(self._measure())
            max_lag_s, retry_after_s = limits
            if self.lag_s > max_lag_s:
                self.shed += 1
                return await refuse(send, 503, f"overloaded: requests wait {self.lag_s * 1000:.0f} ms here; retry",
                                    [(b"retry-after", str(retry_after_s).encode())])
        await self.app(scope, receive, send)

    def __getstate__(self) -> dict:
        """Ray pickles the FastAPI app (and its built middleware) to ship it to replicas: the probe task
        and the lag belong to the process that measured them."""
        return {"app": self.app, "limits": self.limits}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["app"], state["limits"])

    async def _measure(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(PROBE_S)
            self.lag_s = max(0.0, loop.time() - start - PROBE_S)
