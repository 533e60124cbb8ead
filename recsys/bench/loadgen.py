"""An open-loop HTTP load generator: requests start on a fixed schedule, whatever the server does.

(A closed loop would slow down with the server and hide queueing delay.) It runs on the machine it
measures, so it must be cheap: aiohttp (C HTTP parser) costs ~1 ms of CPU per request here, httpx
~4 ms, which the server would have had.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
import numpy as np


@dataclass
class LoadResult:
    rate: float            # requested req/s
    achieved: float        # answered req/s (errors and requests given up on not counted)
    sent: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    degraded: int = 0      # answered, but without some stage or source (listed in the body's `degraded`)
    shed: int = 0          # of the errors, 503s: load the server refused rather than failed on

    def line(self) -> str:
        return (f"{self.rate:>5.0f} req/s asked, {self.achieved:6.1f} done, p50 {self.p50_ms:6.1f} ms, "
                f"p95 {self.p95_ms:6.1f} ms, p99 {self.p99_ms:6.1f} ms, errors {self.errors}/{self.sent} "
                f"({self.shed} shed), degraded {self.degraded}")


async def _run(base_url: str, paths: list[str], rate: float, duration_s: float, concurrency: int,
               timeout_s: float) -> LoadResult:
    n = max(1, int(rate * duration_s))
    latencies: list[float] = []
    errors = degraded = shed = 0
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(base_url=base_url, connector=connector, timeout=timeout) as client:

        async def one(path: str, due: float) -> None:
            nonlocal errors, degraded, shed
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            async with gate:
                start = time.perf_counter()
                if start - due > timeout_s:  # queued past the client's patience: a failure, and the
                    errors += 1              # run ends near its duration even on a saturated server
                    latencies.append((start - due) * 1000)
                    return
                try:
                    async with client.get(path) as response:
                        body = await response.read()
                    if response.status >= 400:
                        errors += 1
                        shed += response.status == 503
                    elif b'"degraded":[' in body and b'"degraded":[]' not in body:
                        degraded += 1
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    errors += 1
                # measured from the scheduled start: waiting for a free connection is latency too
                latencies.append((time.perf_counter() - min(start, due)) * 1000)

        begin = time.perf_counter() + 0.05
        await asyncio.gather(*(one(paths[i % len(paths)], begin + i / rate) for i in range(n)))
        elapsed = time.perf_counter() - begin
    arr = np.array(latencies)
    return LoadResult(rate, (n - errors) / elapsed, n, errors, *(float(np.percentile(arr, q)) for q in (50, 95, 99)),
                      degraded, shed)


def run_load(base_url: str, paths: list[str], rate: float, duration_s: float, concurrency: int = 32,
             timeout_s: float = 5.0) -> LoadResult:
    """`timeout_s`: a request not answered this long after its scheduled start is an error."""
    return asyncio.run(_run(base_url, paths, rate, duration_s, concurrency, timeout_s))
