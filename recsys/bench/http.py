"""HTTP latency per surface at fixed request rates, for each serving topology in turn (deploy fused,
measure, deploy split, measure, then put the configured one back).

Every measured request misses the response cache (each run takes paths of its own, and the cache is
cleared when the topology changes), so the figures are the pipeline's; one more run at the highest
rate replays paths already served, all cache hits.
"""

from __future__ import annotations

import psutil
import psycopg

from recsys.bench.loadgen import run_load
from recsys.bench.requests import sample_paths
from recsys.features.online_store import OnlineStore
from recsys.serve import app
from recsys.serve.cache import ResponseCache


def bench_http(cfg, paths: dict[str, list[str]]) -> dict[str, tuple[float, str]]:
    from recsys.demo import wait_healthy

    b = cfg.bench
    cache = ResponseCache(OnlineStore.from_config(cfg), {})
    figures: dict[str, tuple[float, str]] = {}
    try:
        for topology in b.topologies:
            tcfg = app.with_topology(cfg, topology)
            base_url = app.deploy(tcfg)
            wait_healthy(base_url)
            cache.clear()
            print(f"  {topology}:")
            for surface, surface_paths in paths.items():
                figures.update(_surface(base_url, topology, surface, surface_paths, b))
    finally:
        app.deploy(cfg)
    return figures


def _surface(base_url: str, topology: str, surface: str, paths: list[str], b) -> dict[str, tuple[float, str]]:
    figures = {}
    warm = 2 * int(b.http_concurrency)
    run_load(base_url, paths[:warm], 20, warm / 20, int(b.http_concurrency))
    start = warm
    runs = [(float(rate), "") for rate in b.http_rates] + [(float(max(b.http_rates)), "cached.")]
    for rate, label in runs:
        n = int(rate * float(b.http_duration_s))
        batch = paths[start:start + n] if not label else paths[warm:warm + n]
        start += 0 if label else n
        busy_before = _busy_cpu_s()
        result = run_load(base_url, batch, rate, float(b.http_duration_s), int(b.http_concurrency),
                          float(b.http_timeout_s))
        cpu_ms = (_busy_cpu_s() - busy_before) * 1000 / max(result.sent - result.errors, 1)
        print(f"    {surface:<14} {label or 'miss.':<8} {result.line()}, {cpu_ms:.1f} ms CPU per request")
        key = f"serve.{topology}.{surface}.{label}rate{int(rate)}"
        figures[f"{key}.p50_ms"] = (result.p50_ms, "ms")
        figures[f"{key}.p95_ms"] = (result.p95_ms, "ms")
        figures[f"{key}.p99_ms"] = (result.p99_ms, "ms")
        figures[f"{key}.achieved_rps"] = (result.achieved, "req/s")
        figures[f"{key}.error_rate"] = (result.errors / max(result.sent, 1), "fraction")
        figures[f"{key}.degraded_rate"] = (result.degraded / max(result.sent, 1), "fraction")
        figures[f"{key}.cpu_ms_per_request"] = (cpu_ms, "ms")
    return figures


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine spent busy so far (every process: Serve, HAProxy, Postgres, Redis,
    the load generator). Per request, it is what a request costs on this machine, and with the core
    count it bounds the throughput: 2 cores at 20 ms per request cannot go past 100 req/s."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def paths_needed(b) -> int:
    """Distinct paths per surface for the warm-up and every uncached run."""
    return 2 * int(b.http_concurrency) + sum(int(float(r) * float(b.http_duration_s)) for r in b.http_rates)


def sample(cfg, n: int) -> dict[str, list[str]]:
    from recsys.services import Postgres

    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        return {s: sample_paths(conn, s, n, seed=int(cfg.seed)) for s in cfg.surfaces}
