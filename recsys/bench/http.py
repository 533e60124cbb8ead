"""HTTP serving figures, for each serving topology in turn (fused as bring-up deployed it, measure;
deploy split, measure; then put the configured one back), made so that anyone can reproduce them:

- closed loop (wrk.py): the saturation curve over `bench.http_connections[topology]`, cache misses;
- open loop (loadgen.py): each surface at `bench.http_rate` req/s, cache misses; then the paths just
  served, replayed at `bench.http_cached_rate`, all surfaces mixed: cache hits;
- each figure is the median of `bench.http_repeats` runs; each run first waits for an idle machine
  and is flagged when it did not get one (cpu.wait_idle), and its CPU is split by process group
  (cpu.py), so a figure says what it cost and under which conditions it was taken.

Misses are misses: the response cache is cleared before every closed-loop point and before each
repeat's open-loop runs, and every path of those runs has a user of its own, so no request can be
answered with what another one stored.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import httpx
import psycopg
from omegaconf import DictConfig

from recsys.bench import cpu
from recsys.bench.loadgen import run_load
from recsys.bench.requests import request_of, sample_paths
from recsys.bench.wrk import require_wrk, run_wrk
from recsys.features.online_store import OnlineStore
from recsys.serve import app
from recsys.serve.cache import ResponseCache

PEAK_FROM = 8   # c64_vs_peak: c64 against the best point from this many connections up
GROUP_LABELS = {"serve_replicas": "replicas", "haproxy": "haproxy", "postgres": "postgres", "redis": "redis",
                "broker": "broker", "consumer": "consumer", "ray": "ray", "other": "other"}


@dataclass
class Run:
    """One measured run: its values, the CPU seconds each process group spent, the successful answers
    (what CPU per request divides by) and the machine's state just before it."""
    values: dict[str, float]
    cpu_s: dict[str, float]
    answered: int
    before: cpu.Conditions

    def cpu_ms_per_answer(self) -> dict[str, float]:
        per = {g: s * 1000 / max(self.answered, 1) for g, s in self.cpu_s.items()}
        per["total"] = sum(per[g] for g in cpu.SERVER_GROUPS)   # the server's cost, generator left out
        return per


class PathPool:
    """Distinct request paths, one user each, the surfaces interleaved. Runs take windows of it in turn,
    so consecutive runs ask for different users (the cache is cleared between runs anyway)."""

    def __init__(self, mixed: list[str]):
        self.mixed = mixed
        self.by_surface: dict[str, list[str]] = {}
        for path in mixed:
            self.by_surface.setdefault(request_of(path).surface, []).append(path)
        self._offsets: dict[str | None, int] = {}

    def take(self, n: int, surface: str | None = None) -> list[str]:
        source = self.mixed if surface is None else self.by_surface[surface]
        n, start = min(n, len(source)), self._offsets.get(surface, 0)
        self._offsets[surface] = (start + n) % len(source)
        return (source[start:] + source[:start])[:n]


def bench_http(cfg, live_url: str | None = None) -> dict[str, tuple[float, str]]:
    """`live_url`: where the configured topology is already deployed (make bench's bring-up just did it),
    so it is measured without a redeploy, which takes ~45 s here."""
    from recsys.demo import wait_healthy

    b = cfg.bench
    require_wrk()
    per_point = int(float(b.http_seconds) * float(b.http_max_rps))
    per_surface = int(float(b.http_rate) * float(b.http_seconds)) * int(b.http_repeats)
    pool = sample_pool(cfg, max(per_point, per_surface * len(cfg.surfaces)))
    if len(pool.mixed) < per_point:
        print(f"  note: {len(pool.mixed)} distinct users for {per_point} paths a point: a point past "
              f"{len(pool.mixed) / float(b.http_seconds):.0f} req/s repeats paths (marked WRAPPED)")
    # a generous timeout: clearing the cache SCANs the whole keyspace, and a saturated run leaves Redis busy
    cache = ResponseCache(OnlineStore.from_config(cfg, socket_timeout=60.0), {})
    meter = cpu.Meter(float(b.http_idle_cpu_pct), float(b.http_idle_wait_s), cpu.stack_marks(cfg))
    figures: dict[str, tuple[float, str]] = {}
    live = cfg.serve.topology if live_url else None
    try:
        for topology in b.topologies:
            if topology == live:
                base_url = live_url
            else:
                live = None   # until the deploy returns, what runs is unknown
                base_url = app.deploy(app.with_topology(cfg, topology))
                live = topology
            wait_healthy(base_url)
            figures.update(_topology(Setup(str(topology), base_url, pool, cache, meter, b)))
    finally:
        if live != cfg.serve.topology:   # the configured topology back
            app.deploy(cfg)
    return figures


def owned_prefixes(cfg) -> list[str]:
    """The figures this part writes, by prefix: a run replaces them all, so none outlives its meaning."""
    return [f"serve.{t}." for t in cfg.bench.topologies]


@dataclass
class Setup:
    """What every run against one deployed topology needs."""
    topology: str
    base_url: str
    pool: PathPool
    cache: ResponseCache
    meter: cpu.Meter
    b: DictConfig


def _topology(s: Setup) -> dict:
    print(f"\n  {s.topology}: warm-up (wrk, 8 connections, 3 s)")
    run_wrk(s.base_url, s.pool.take(int(3 * float(s.b.http_max_rps))), 8, 3, int(s.b.http_wrk_threads),
            float(s.b.http_timeout_s))
    return _report(s.topology, _closed_loop(s), _open_loop(s), s.b)


# --- the runs ------------------------------------------------------------------------------------------

def _closed_loop(s: Setup) -> dict[int, list[Run]]:
    b = s.b
    connections = [int(c) for c in b.http_connections[s.topology]]
    seconds, n = float(b.http_seconds), int(float(b.http_seconds) * float(b.http_max_rps))
    print(f"  {s.topology}: closed loop (wrk), {seconds:g} s a point, cache misses, {int(b.http_repeats)} runs")
    runs: dict[int, list[Run]] = {c: [] for c in connections}
    for rep in range(int(b.http_repeats)):
        for c in connections:
            paths = s.pool.take(n)
            s.cache.clear()
            res, used, before = s.meter.measure(lambda: run_wrk(s.base_url, paths, c, seconds, int(b.http_wrk_threads),
                                                                float(b.http_timeout_s)))
            answered = max(res.requests, 1)
            runs[c].append(Run({"rps": res.rps, "p50_ms": res.p50_ms, "p95_ms": res.p95_ms, "p99_ms": res.p99_ms,
                                "shed_rate": res.shed_rate, "error_rate": (res.non2xx - res.shed) / answered,
                                "socket_errors": res.socket_errors, "degraded_rate": res.degraded / max(res.ok, 1),
                                "wrapped": float(res.wrapped)}, used, res.ok, before))
            print(f"    run {rep + 1} c{c:<3} {res.rps:7.1f} 2xx/s  p50 {res.p50_ms:7.1f}  p95 {res.p95_ms:7.1f}  "
                  f"p99 {res.p99_ms:7.1f} ms  shed {res.shed}  other non-2xx {res.non2xx - res.shed}  "
                  f"socket errors {res.socket_errors}  {before.note()}" + ("  WRAPPED" if res.wrapped else ""))
    return runs


def _open_loop(s: Setup) -> dict[str, list[Run]]:
    b = s.b
    rate, seconds = float(b.http_rate), float(b.http_seconds)
    cached = s.topology in b.http_cached_topologies
    print(f"  {s.topology}: open loop (aiohttp), {rate:g} req/s a surface for {seconds:g} s, cache misses"
          + (f"; then those paths replayed at {float(b.http_cached_rate):g} req/s, cache hits" if cached else ""))
    runs: dict[str, list[Run]] = {surface: [] for surface in s.pool.by_surface} | ({"cached": []} if cached else {})
    for rep in range(int(b.http_repeats)):
        served = []
        s.cache.clear()   # once: the surfaces' paths have users of their own, and the replay needs all three
        for surface in s.pool.by_surface:
            paths = s.pool.take(int(rate * seconds), surface)
            served.append(paths)
            runs[surface].append(_open_run(s, paths, rate, f"run {rep + 1} {surface}"))
        if cached:
            replay = [p for group in zip(*served) for p in group]   # the surfaces interleaved
            rules = httpx.get(s.base_url + replay[0], timeout=10).json().get("rule_set_version")   # in the cache key
            missing = [p for p, hit in zip(replay, _in_cache(s.cache, replay, rules)) if not hit]
            if missing:   # expired, or degraded (never cached): served again first, not measured
                print(f"    ({len(missing)} of {len(replay)} paths not in the cache: served again first)")
                run_load(s.base_url, missing, rate, len(missing) / rate, int(b.http_concurrency),
                         float(b.http_timeout_s))
            runs["cached"].append(_open_run(s, replay, float(b.http_cached_rate), f"run {rep + 1} cached"))
    return runs


def _open_run(s: Setup, paths: list[str], rate: float, label: str) -> Run:
    b = s.b
    res, used, before = s.meter.measure(lambda: run_load(s.base_url, paths, rate, float(b.http_seconds),
                                                         int(b.http_concurrency), float(b.http_timeout_s)))
    sent = max(res.sent, 1)
    print(f"    {label:<22} {res.line()}  {before.note()}")
    return Run({"achieved_rps": res.achieved, "p50_ms": res.p50_ms, "p95_ms": res.p95_ms, "p99_ms": res.p99_ms,
                "error_rate": res.errors / sent, "shed_rate": res.shed / sent, "degraded_rate": res.degraded / sent},
               used, res.sent - res.errors, before)


def _in_cache(cache: ResponseCache, paths: list[str], rules_version: str | None) -> list[bool]:
    pipe = cache.store.r.pipeline(transaction=False)
    for path in paths:
        pipe.exists(cache.key(request_of(path), rules_version))
    return [bool(n) for n in pipe.execute()]


# --- medians, tables, figures --------------------------------------------------------------------------

def _median(runs: list[Run], key: str) -> float:
    return statistics.median(r.values[key] for r in runs)


def _median_cpu(runs: list[Run]) -> dict[str, float]:
    per_run = [r.cpu_ms_per_answer() for r in runs]
    return {g: statistics.median(p[g] for p in per_run) for g in per_run[0]}


def _report(topology: str, curve: dict[int, list[Run]], rates: dict[str, list[Run]], b) -> dict:
    t, target = f"serve.{topology}", float(b.http_p95_target_ms)
    figures: dict[str, tuple[float, str]] = {}
    all_runs = [r for runs in (*curve.values(), *rates.values()) for r in runs]
    busy = sum(not r.before.idle for r in all_runs)

    print(f"\n  {topology}: closed loop, cache misses (median of {int(b.http_repeats)} runs)")
    print(f"  {'conns':>5} {'2xx/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'shed':>7} {'errors':>7} "
          f"{'sock err':>8} {'degraded':>8} {'load':>5} {'busy':>4}")
    for c, runs in curve.items():
        m = {k: _median(runs, k) for k in runs[0].values}
        print(f"  {c:>5} {m['rps']:8.1f} {m['p50_ms']:8.1f} {m['p95_ms']:8.1f} {m['p99_ms']:8.1f} "
              f"{m['shed_rate']:7.1%} {m['error_rate']:7.1%} {m['socket_errors']:8.0f} {m['degraded_rate']:8.1%} "
              f"{statistics.median(r.before.loadavg_1m for r in runs):5.2f} {sum(not r.before.idle for r in runs):>4}"
              + ("  WRAPPED" if m["wrapped"] else ""))
        figures[f"{t}.c{c}.rps"] = (m["rps"], "req/s")
        figures[f"{t}.c{c}.p95_ms"] = (m["p95_ms"], "ms")
        figures[f"{t}.c{c}.shed_rate"] = (m["shed_rate"], "fraction")

    within = [c for c, runs in curve.items() if _median(runs, "p95_ms") < target]
    best = max(within, key=lambda c: _median(curve[c], "rps"), default=None)
    if best is None:
        print(f"  no point had p95 < {target:g} ms: no saturation or CPU-per-miss figure")
    else:
        figures[f"{t}.saturation.rps_at_p95_{target:g}ms"] = (_median(curve[best], "rps"), "req/s")
        figures[f"{t}.saturation.p95_ms"] = (_median(curve[best], "p95_ms"), "ms")
        figures[f"{t}.saturation.connections"] = (best, "connections")
        cost = _median_cpu(curve[best])
        figures[f"{t}.cpu_ms_per_miss"] = (cost["total"], "ms")
        for group in cpu.SERVER_GROUPS:
            figures[f"{t}.cpu_ms_per_miss.{group}"] = (cost[group], "ms")
        print(f"  saturation (highest 2xx/s with p95 < {target:g} ms): {_median(curve[best], 'rps'):.1f} req/s "
              f"at {best} connections, p95 {_median(curve[best], 'p95_ms'):.1f} ms, "
              f"{cost['total']:.1f} ms of server CPU a miss")
    top, peak_points = max(curve), [c for c in curve if PEAK_FROM <= c]
    if top > PEAK_FROM:
        peak = max(_median(curve[c], "rps") for c in peak_points)
        figures[f"{t}.c{top}_vs_peak"] = (_median(curve[top], "rps") / peak if peak else 0.0, "ratio")
        print(f"  c{top} against the best from c{PEAK_FROM} up: {figures[f'{t}.c{top}_vs_peak'][0]:.2f} "
              f"(below 1: more connections, less throughput)")

    points = {f"c{c}": runs for c, runs in curve.items()}
    print(f"\n  {topology}: open loop (median of {int(b.http_repeats)} runs)")
    print(f"  {'run':<22} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7} {'shed':>7} "
          f"{'degraded':>8} {'load':>5} {'busy':>4}")
    for name, runs in rates.items():
        rate = float(b.http_cached_rate) if name == "cached" else float(b.http_rate)
        key = f"{t}.{name}.rate{rate:g}"
        m, points[f"{name}@{rate:g}"] = {k: _median(runs, k) for k in runs[0].values}, runs
        print(f"  {name + f'@{rate:g}':<22} {m['achieved_rps']:7.1f} {m['p50_ms']:8.1f} {m['p95_ms']:8.1f} "
              f"{m['p99_ms']:8.1f} {m['error_rate']:7.1%} {m['shed_rate']:7.1%} {m['degraded_rate']:8.1%} "
              f"{statistics.median(r.before.loadavg_1m for r in runs):5.2f} {sum(not r.before.idle for r in runs):>4}")
        for k, unit in (("p50_ms", "ms"), ("p95_ms", "ms"), ("p99_ms", "ms"), ("achieved_rps", "req/s"),
                        ("error_rate", "fraction"), ("degraded_rate", "fraction")):
            figures[f"{key}.{k}"] = (m[k], unit)
        figures[f"{key}.cpu_ms_per_request"] = (_median_cpu(runs)["total"], "ms")

    _print_cpu(topology, points)
    figures[f"{t}.loadavg_before"] = (statistics.median(r.before.loadavg_1m for r in all_runs), "load")
    figures[f"{t}.busy_runs"] = (busy, "runs")
    figures[f"{t}.runs"] = (len(all_runs), "runs")
    if busy:
        print(f"  WARNING: {busy} of {len(all_runs)} {topology} runs started on a busy machine (CPU >= "
              f"{float(b.http_idle_cpu_pct):g}% after {float(b.http_idle_wait_s):g} s of waiting): the figures "
              f"carry it as {t}.busy_runs; rerun on an idle machine before publishing them")
    return figures


def _print_cpu(topology: str, points: dict[str, list[Run]]) -> None:
    """CPU ms per successful answer by process group; `total` is the server's (every group but the
    generator), `machine` the whole machine's busy time, which also holds what no process accounts for."""
    cols = [*cpu.SERVER_GROUPS, "total", "generator", "machine"]
    print(f"\n  {topology}: CPU ms per successful answer by process group (median of runs)")
    print(f"  {'point':<16}" + "".join(f"{GROUP_LABELS.get(g, g):>10}" for g in cols))
    for name, runs in points.items():
        cost = _median_cpu(runs)
        print(f"  {name:<16}" + "".join(f"{cost[g]:10.2f}" for g in cols))


# --- request paths -------------------------------------------------------------------------------------

def sample_pool(cfg, n: int) -> PathPool:
    """Up to n paths, all surfaces interleaved, path i with the i-th sampled user (sample_paths orders the
    users the same way for every surface), so no two paths share a user: at most one path per user."""
    from recsys.services import Postgres

    surfaces = list(cfg.surfaces)
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        users = conn.execute("SELECT count(DISTINCT user_id) FROM events").fetchone()[0]
        n = max(len(surfaces), min(n, int(users)))
        per_surface = {s: sample_paths(conn, s, n, seed=int(cfg.seed)) for s in surfaces}
    return PathPool([per_surface[surfaces[i % len(surfaces)]][i] for i in range(n)])


def sample(cfg, n: int) -> dict[str, list[str]]:
    """n paths per surface (the floor's requests)."""
    from recsys.services import Postgres

    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        return {s: sample_paths(conn, s, n, seed=int(cfg.seed)) for s in cfg.surfaces}
