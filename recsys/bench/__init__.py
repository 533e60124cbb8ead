"""`make bench`: ingestion throughput and freshness, HTTP latency per surface; written to docs/benchmarks.*"""

from __future__ import annotations

import psycopg

from recsys.bench.ingestion import bench_ingestion
from recsys.bench.loadgen import run_load
from recsys.bench.report import record
from recsys.bench.requests import sample_paths

COMMAND = "make bench"


def bench_http(cfg, base_url: str) -> dict[str, tuple[float, str]]:
    from recsys.services import Postgres

    b = cfg.bench
    figures = {}
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        paths = {s: sample_paths(conn, s, 2000, seed=int(cfg.seed)) for s in cfg.surfaces}
    for surface, surface_paths in paths.items():
        run_load(base_url, surface_paths[:50], 20, 2, int(b.http_concurrency))  # warm-up
        for rate in b.http_rates:
            result = run_load(base_url, surface_paths, float(rate), float(b.http_duration_s), int(b.http_concurrency))
            print(f"  {surface:<14} {result.line()}")
            key = f"serve.{cfg.serve.topology}.{surface}.rate{int(rate)}"
            figures[f"{key}.p50_ms"] = (result.p50_ms, "ms")
            figures[f"{key}.p95_ms"] = (result.p95_ms, "ms")
            figures[f"{key}.p99_ms"] = (result.p99_ms, "ms")
            figures[f"{key}.achieved_rps"] = (result.achieved, "req/s")
            figures[f"{key}.error_rate"] = (result.errors / max(result.sent, 1), "fraction")
    return figures


def run_bench(cfg, only: str | None = None) -> int:
    from recsys.demo import bring_up

    wanted = set((only or "ingest,http").split(","))
    base_url = bring_up(cfg)
    if "ingest" in wanted:
        figures = bench_ingestion(cfg, int(cfg.bench.ingest_events), int(cfg.bench.freshness_samples))
        for name, (value, unit) in figures.items():
            print(f"  {name:<34} {value:10.1f} {unit}")
        record(figures, COMMAND)
    if "http" in wanted:
        record(bench_http(cfg, base_url), COMMAND)
    print("written: docs/benchmarks.md, docs/benchmarks.json")
    return 0
