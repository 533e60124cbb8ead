"""Soak, as numbers: `bench.soak_minutes` of the mixed load (recommendations for the three surfaces and
POST /v1/events) at `bench.soak_rate_fraction` of the measured saturation rate, against the running
stack. Each minute: answers, errors, latency, the memory of every recsys process group and Redis'
`used_memory`. Targets (docs/reliability.md): zero errors; memory flat after the first minute (growth
< 10%); the last minute's p95 within 20% of the first's.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import psutil
import psycopg

from recsys.bench.chaos import SURFACES, MixedLoad, ensure_key, logged_events
from recsys.demo import wait_healthy
from recsys.bench.report import DOCS

SATURATION_FIGURE = "serve.fused.saturation.rps_at_p95_80ms"
GROUPS = ("serve_replicas", "haproxy", "ray", "consumer", "postgres", "broker", "redis")


def saturation_rps(cfg, docs: Path = DOCS) -> tuple[float, str]:
    """(req/s, where it came from): the saturation figure when `make bench` measured one; else the
    lowest, over the surfaces, of the highest answered rate of the fused topology on cache misses
    (what the HTTP part sustained); else `bench.soak_rate`."""
    path = docs / "benchmarks.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    name = str(cfg.bench.get("soak_saturation_figure", SATURATION_FIGURE))
    if name in data:
        return float(data[name]["value"]), name
    best: dict[str, float] = {}
    for key, figure in data.items():
        m = re.fullmatch(r"serve\.fused\.(\w+)\.rate\d+\.achieved_rps", key)
        if m:
            best[m[1]] = max(best.get(m[1], 0.0), float(figure["value"]))
    if best:
        return min(best.values()), "the lowest over surfaces of max serve.fused.<surface>.rate*.achieved_rps"
    return float(cfg.bench.soak_rate), "bench.soak_rate (no HTTP figures in docs/benchmarks.json)"


def process_groups(cfg) -> dict[str, list[psutil.Process]]:
    """The processes of this stack by group: Serve replicas, HAProxy, the rest of Ray (raylet, GCS,
    controller, idle workers), the consumer actors, Postgres (postmaster and backends), the broker, and
    redis-server when recsys started it. Ray's are found by the head's own temp folder."""
    from recsys.services import Kafka, Postgres, Ray, Redis
    from recsys.services.process import read_pid
    from recsys.services.ray_head import _head_processes

    import ray

    groups: dict[str, list[psutil.Process]] = {g: [] for g in GROUPS}
    head = Ray(cfg)
    consumers: set[int] = set()
    if ray.is_initialized() or head.health().ok:   # never start a Ray of its own just to look
        try:
            from recsys.features import supervisor

            consumers = set(supervisor.consumer_pids(cfg).values())
        except Exception:
            pass
    if not head.external:
        for proc in _head_processes(str(head.temp_dir), int(cfg.services.ray.port)):
            try:
                cmd = " ".join(proc.cmdline())
                name = proc.name()
            except psutil.Error:
                continue
            if proc.pid in consumers:
                groups["consumer"].append(proc)
            elif "haproxy" in name or cmd.startswith("haproxy") or "/haproxy " in cmd:
                groups["haproxy"].append(proc)
            elif "ServeReplica" in cmd:
                groups["serve_replicas"].append(proc)
            else:
                groups["ray"].append(proc)
    # HAProxy may run detached from the head's process tree: its files are named after the head's port.
    mine = f"recsys-haproxy-{cfg.services.ray.port}"
    seen = {p.pid for procs in groups.values() for p in procs}
    for proc in psutil.process_iter(["cmdline", "name"]):
        if proc.pid not in seen and "haproxy" in (proc.info["name"] or "") and mine in " ".join(proc.info["cmdline"] or []):
            groups["haproxy"].append(proc)
    pg = Postgres(cfg)
    if not pg.external:
        try:
            postmaster = psutil.Process(int((Path(pg.data_dir) / "postmaster.pid").read_text().split()[0]))
            groups["postgres"] = [postmaster, *postmaster.children(recursive=True)]
        except (OSError, ValueError, IndexError, psutil.Error):
            pass
    for group, pid in (("broker", read_pid(Kafka(cfg).pid_file)), ("redis", read_pid(Redis(cfg).pid_file))):
        if pid is not None:
            try:
                groups[group] = [psutil.Process(pid)]
            except psutil.Error:
                pass
    return groups


def memory_by_group(cfg) -> dict[str, float]:
    """Bytes resident per group: PSS where the kernel gives it (pages shared between processes, like
    Postgres' shared buffers, counted once over the group), else RSS."""
    out = {}
    for group, procs in process_groups(cfg).items():
        total = 0.0
        for proc in procs:
            try:
                info = proc.memory_full_info()
                total += float(getattr(info, "pss", 0) or info.rss)
            except psutil.Error:
                try:
                    total += float(proc.memory_info().rss)
                except psutil.Error:
                    pass
        if procs:
            out[group] = total
    return out


def redis_used_memory(cfg) -> float:
    import redis

    return float(redis.Redis.from_url(cfg.services.redis.url, socket_timeout=2).info("memory")["used_memory"])


def _growth(first: float | None, last: float | None) -> float:
    return float("nan") if not first or last is None else (last - first) / first * 100


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def bench_soak(cfg, base_url: str, docs: Path = DOCS, minute_s: float = 60.0) -> dict[str, tuple[float, str]]:
    """`minute_s`: the length of a "minute" (a test runs the same bookkeeping in seconds)."""
    from recsys.bench.requests import sample_paths
    from recsys.services import Postgres

    b = cfg.bench
    minutes = max(1, int(b.soak_minutes))
    saturation, source = saturation_rps(cfg, docs)
    rate = max(1.0, saturation * float(b.soak_rate_fraction))
    load_before = os.getloadavg()[0]
    print(f"  load average before the run: {load_before:.2f} (1 min), {os.cpu_count()} cores")
    print(f"  {minutes} min at {rate:.1f} req/s = {float(b.soak_rate_fraction):.0%} of {saturation:.1f} req/s "
          f"({source}); {float(b.soak_event_share):.0%} POST /v1/events")
    wait_healthy(base_url)
    dsn = Postgres(cfg).dsn
    n_paths = int(rate * 120 / len(SURFACES)) + 1   # a path recurs after the 90 s cache TTL: misses
    with psycopg.connect(dsn, autocommit=True) as conn:
        paths = {s: sample_paths(conn, s, n_paths, seed=int(cfg.seed) + 7) for s in SURFACES}
        skus = [r[0] for r in conn.execute("SELECT sku FROM items ORDER BY sku LIMIT 2000")]
    prefix = f"soak-{time.strftime('%Y%m%d%H%M%S')}-"
    load = MixedLoad(base_url, paths, skus, rate, minutes * minute_s, prefix, ensure_key(cfg),
                     float(b.soak_event_share), float(b.http_timeout_s), users=int(b.soak_users)).start()
    start = load.started_at
    print(f"  {'min':>3} {'sent':>6} {'errors':>6} {'degraded':>8} {'p50_ms':>7} {'p95_ms':>7}  "
          + " ".join(f"{g[:9]:>9}" for g in GROUPS) + f" {'redis_used':>10}   (MB)")
    rows = []
    for minute in range(1, minutes + 1):
        time.sleep(max(0.0, start + minute * minute_s - time.time()))
        memory = memory_by_group(cfg)
        try:
            redis_bytes = redis_used_memory(cfg)
        except Exception:
            redis_bytes = float("nan")
        window = [a for a in list(load.answers) if start + (minute - 1) * minute_s <= a.due < start + minute * minute_s]
        gets = [a.latency_ms for a in window if a.kind == "get" and a.ok]
        row = {"sent": len(window), "errors": sum(not a.ok for a in window), "degraded": sum(a.degraded for a in window),
               "p50": _p(gets, 50), "p95": _p(gets, 95), "memory": memory, "redis": redis_bytes}
        rows.append(row)
        print(f"  {minute:>3} {row['sent']:>6} {row['errors']:>6} {row['degraded']:>8} {row['p50']:>7.1f} "
              f"{row['p95']:>7.1f}  " + " ".join(f"{memory.get(g, float('nan')) / 2**20:>9.0f}" for g in GROUPS)
              + f" {redis_bytes / 2**20:>10.1f}", flush=True)
    load.stop()
    answers = list(load.answers)
    accepted = {e for a in answers for e in a.accepted}
    deadline, logged = time.monotonic() + 60, {}
    while time.monotonic() < deadline:   # the consumer catches up with the last events
        try:
            logged, _ = logged_events(dsn, prefix)
        except psycopg.Error:
            pass
        if accepted <= set(logged):
            break
        time.sleep(1.0)
    # Memory grows while the first minute warms up (caches, connection pools, lazily loaded models): the
    # baseline is the sample taken at the end of the first minute, compared with the one at the end of
    # the last. Latency per minute from every answer, the slow ones that came after the row was printed too.
    first, last = rows[0], rows[-1]
    for minute, row in ((1, first), (len(rows), last)):
        row["p95"] = _p([a.latency_ms for a in answers if a.kind == "get" and a.ok
                         and start + (minute - 1) * minute_s <= a.due < start + minute * minute_s], 95)
    figures: dict[str, tuple[float, str]] = {
        "soak.load_avg_1m_before": (load_before, "load"),
        "soak.minutes": (minutes, "min"),
        "soak.rate_rps": (rate, "req/s"),
        "soak.requests": (len(answers), "requests"),
        "soak.errors": (sum(not a.ok for a in answers), "answers"),
        "soak.degraded": (sum(a.degraded for a in answers), "answers"),
        "soak.events_accepted": (len(accepted), "events"),
        "soak.events_lost": (len(accepted - set(logged)), "events"),
        "soak.p95_first_min_ms": (first["p95"], "ms"),
        "soak.p95_last_min_ms": (last["p95"], "ms"),
        "soak.p95_drift_pct": (_growth(first["p95"], last["p95"]), "%"),
        "soak.redis_memory_growth_pct": (_growth(first["redis"], last["redis"]), "%"),
    }
    for group in GROUPS:
        base, end = first["memory"].get(group), last["memory"].get(group)
        if base and end is not None:
            figures[f"soak.rss_growth_pct.{group}"] = (_growth(base, end), "%")
    figures = {name: f for name, f in figures.items() if not math.isnan(f[0])}   # a figure not measured
    bad = [name for name, (value, _) in figures.items() if (name in ("soak.errors", "soak.events_lost") and value > 0)
           or (name.startswith("soak.rss_growth_pct") or name == "soak.redis_memory_growth_pct") and value >= 10
           or (name == "soak.p95_drift_pct" and abs(value) > 20)]
    print(f"  {len(answers)} requests, {figures['soak.errors'][0]:.0f} errors, "
          f"{len(accepted)} events accepted, {figures['soak.events_lost'][0]:.0f} not in the log; "
          + (f"targets missed: {', '.join(bad)}" if bad else "every target met"))
    return figures
