"""Serve's autoscaling on a two-node Ray cluster, as numbers (`recsys bench --only autoscale`).

The design card promises replicas autoscaled to hold p95 under 80 ms. On a cluster of its own — a head
and a worker node started on this machine by recsys.services.local_cluster, each a Ray node with a
resource of its own, Serve's HTTP front (HAProxy) on the head — the fused application is deployed as
conf/serve/cluster.yaml shapes it (autoscaling between min_replicas and max_replicas, at most
max_replicas_per_node per node) and an open-loop load ramps up, then down (`bench.autoscale_steps`).
Every `bench.autoscale_window_s` the bench records the load's p95 and the replicas Serve runs; after
the ramp the load stays low until the replicas are back at the minimum. It reports per step the p95
and the replicas at its end, the most replicas reached, the fewest after the ramp, and how long scaling
up and down took: each the median of `bench.autoscale_runs` runs (`serve.autoscale.*` in
docs/benchmarks.json; the timeline in docs/benchmarks-autoscale.md).

The cluster uses the running stack's Postgres, Redis, broker and trained models (make bench's bring-up),
with its own Ray nodes, ports and HTTP port; the response cache is off for it, so every request runs
the whole pipeline (the costliest case). Both nodes share this machine's cores: more replicas add
capacity only while a core is free, which is what the figures show.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path


COMMAND = "recsys bench --only autoscale"
P95_TARGET_MS = 80.0
DEPLOYMENT = "recsys_api"


# --- watching Serve ------------------------------------------------------------------------------------

def running_replicas(app_name: str, deployment: str = DEPLOYMENT) -> int:
    from ray import serve

    app = serve.status().applications.get(app_name)
    if app is None or deployment not in app.deployments:
        return 0
    return int(app.deployments[deployment].replica_states.get("RUNNING", 0))


def replica_nodes(app_name: str, deployment: str = DEPLOYMENT) -> dict[str, str]:
    """{replica actor name: Ray node id} of the deployment's live replicas."""
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", f"ServeReplica:{app_name}:{deployment}"),
                                  ("state", "=", "ALIVE")], limit=200)
    return {a.name: a.node_id for a in actors}


class Sampler:
    """A thread recording (seconds since start, RUNNING replicas) every `interval_s`, and the replicas'
    nodes whenever the count changes."""

    def __init__(self, app_name: str, interval_s: float = 1.0, deployment: str = DEPLOYMENT):
        self.app_name, self.interval_s, self.deployment = app_name, float(interval_s), deployment
        self.samples: list[tuple[float, int]] = []
        self.nodes: list[dict[str, str]] = []     # placement at each change of the count
        self.started = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Sampler":
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="replica-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        last = None
        while not self._stop.is_set():
            try:
                count = running_replicas(self.app_name, self.deployment)
                self.samples.append((time.monotonic() - self.started, count))
                if count != last:
                    last = count
                    self.nodes.append(replica_nodes(self.app_name, self.deployment))
            except Exception:   # a controller busy for a moment: the next sample
                pass
            self._stop.wait(self.interval_s)

    def now(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)


# --- the ramp ------------------------------------------------------------------------------------------

@dataclass
class Answer:
    step: int              # the ramp's step (len(steps) for the low load after it)
    at_s: float            # scheduled start, seconds since the ramp began
    latency_ms: float      # from the scheduled start: waiting for a free connection is latency too
    status: int            # HTTP status; 0 when nothing answered in time
    shed: bool = False     # a 503 with Retry-After: a replica (or its admission control) refused the load,
                           # as opposed to nothing answering (HAProxy's own 503 has no Retry-After)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class RampRun:
    answers: list[Answer] = field(default_factory=list)
    samples: list[tuple[float, int]] = field(default_factory=list)   # (seconds since the ramp began, replicas)
    nodes: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    before: object = None  # cpu.Conditions: the machine just before the run

    def replicas_at(self, at_s: float) -> int:
        before = [c for t, c in self.samples if t <= at_s]
        return before[-1] if before else (self.samples[0][1] if self.samples else 0)

    def windows(self, window_s: float) -> list["Window"]:
        by: dict[int, list[Answer]] = {}
        for a in self.answers:
            by.setdefault(int(a.at_s // window_s), []).append(a)
        return [Window.of(i * window_s, (i + 1) * window_s, group, self.replicas_at((i + 1) * window_s))
                for i, group in sorted(by.items())]


@dataclass
class Window:
    start_s: float
    end_s: float
    step: int
    sent: int
    errors: int
    shed: int
    p50_ms: float
    p95_ms: float
    replicas: int          # RUNNING replicas at the window's end

    @classmethod
    def of(cls, start_s: float, end_s: float, answers: list[Answer], replicas: int) -> "Window":
        import numpy as np

        lat = np.array([a.latency_ms for a in answers]) if answers else np.zeros(1)
        return cls(start_s, end_s, max(a.step for a in answers) if answers else -1, len(answers),
                   sum(not 200 <= a.status < 300 for a in answers), sum(a.status == 503 for a in answers),
                   float(np.percentile(lat, 50)), float(np.percentile(lat, 95)), replicas)

    @property
    def rate(self) -> float:
        return self.sent / max(self.end_s - self.start_s, 1e-9)

    def line(self) -> str:
        return (f"  {self.start_s:5.0f}-{self.end_s:<4.0f}s  step {self.step}  {self.rate:5.0f} req/s  "
                f"p50 {self.p50_ms:6.1f}  p95 {self.p95_ms:7.1f} ms  errors {self.errors:>4}/{self.sent:<5} "
                f"(503 {self.shed})  replicas {self.replicas}")


def p95(answers: list[Answer]) -> float:
    import numpy as np

    return float(np.percentile([a.latency_ms for a in answers], 95)) if answers else 0.0


class Ramp:
    """An open loop (like loadgen.run_load: requests start on schedule whatever the server does) over
    `steps` of (req/s, seconds); after them, while `settled()` is false, the last step's rate goes on
    (at most `tail_max_s`). Every request is kept (Answer), so steps and windows are exact slices."""

    def __init__(self, base_url: str, paths: list[str], concurrency: int = 64, timeout_s: float = 5.0):
        self.base_url, self.paths = base_url, paths
        self.concurrency, self.timeout_s = int(concurrency), float(timeout_s)
        self._next = 0

    def _path(self) -> str:
        path = self.paths[self._next % len(self.paths)]
        self._next += 1
        return path

    def run(self, steps: list[tuple[float, float]], settled=None, tail_max_s: float = 0.0) -> RampRun:
        out = RampRun()
        began = time.monotonic()
        out.answers = asyncio.run(self._run(steps, settled, float(tail_max_s), began))
        out.seconds = time.monotonic() - began
        return out

    async def _run(self, steps, settled, tail_max_s: float, began: float) -> list[Answer]:
        import aiohttp

        answers: list[Answer] = []
        gate = asyncio.Semaphore(self.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        pending: set[asyncio.Task] = set()
        async with aiohttp.ClientSession(base_url=self.base_url, timeout=timeout,
                                         connector=aiohttp.TCPConnector(limit=self.concurrency)) as client:

            async def one(path: str, step: int, due: float) -> None:
                status, shed = 0, False
                async with gate:
                    if time.monotonic() - due <= self.timeout_s:   # else: queued past the client's patience
                        try:
                            async with client.get(path) as r:
                                await r.read()
                                status = r.status
                                shed = status == 503 and "Retry-After" in r.headers
                        except (aiohttp.ClientError, asyncio.TimeoutError):
                            status = 0
                answers.append(Answer(step, due - began, (time.monotonic() - due) * 1000, status, shed))

            def schedule(due: float, step: int) -> None:
                task = asyncio.create_task(one(self._path(), step, due))
                pending.add(task)
                task.add_done_callback(pending.discard)

            offset = 0.0
            for i, (rate, seconds) in enumerate(steps):
                for j in range(int(rate * seconds)):
                    due = began + offset + j / rate
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    schedule(due, i)
                offset += seconds
            if settled is not None and steps:
                rate, j = float(steps[-1][0]), 0
                while offset + j / rate < offset + tail_max_s:
                    if j % max(int(rate), 1) == 0 and settled():   # asked once a second
                        break
                    due = began + offset + j / rate
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    schedule(due, len(steps))
                    j += 1
            if pending:
                await asyncio.gather(*pending)
        return sorted(answers, key=lambda a: a.at_s)


def ramp_once(ramp: Ramp, app_name: str, steps: list[tuple[float, float]], min_replicas: int,
              tail_max_s: float, interval_s: float = 1.0) -> RampRun:
    """One ramp with the replicas sampled beside it; the low load goes on after the ramp until the
    replicas are back at `min_replicas` (at most `tail_max_s`)."""
    sampler = Sampler(app_name, interval_s).start()
    began = time.monotonic()
    try:
        run = ramp.run(steps, lambda: sampler.now() <= min_replicas, tail_max_s)
    finally:
        sampler.stop()
    shift = sampler.started - began
    run.samples = [(t + shift, c) for t, c in sampler.samples]
    run.nodes = sampler.nodes
    return run


def first_at(samples: list[tuple[float, int]], since_s: float, predicate) -> float | None:
    """Seconds from `since_s` until the first sample at or after it that meets `predicate`."""
    for t, count in samples:
        if t >= since_s and predicate(count):
            return t - since_s
    return None


# --- the bench -----------------------------------------------------------------------------------------

SURFACES = ("homepage_hero", "pdp_fbt", "cart_upsell")


def cluster_overrides(serve_port: int) -> list[str]:
    """The autoscaled application on a cluster of its own: conf/serve/cluster.yaml, its own Ray head
    ports and HTTP port, the response cache off (every request a miss)."""
    from recsys.services.local_cluster import head_overrides

    return [*head_overrides(), "serve=cluster", f"serve.port={serve_port}",
            *(f"surfaces.{s}.cache_ttl_s=0" for s in SURFACES)]


def connect(local, cluster_cfg) -> None:
    """This process, a driver of the local cluster (whatever Ray it was connected to before)."""
    import ray

    from recsys.services.ray_head import RUNTIME_ENV, ray_env

    if ray.is_initialized():
        ray.shutdown()
    os.environ.update(ray_env(cluster_cfg))
    ray.init(address=local.address, logging_level="WARNING", log_to_driver=False,
             runtime_env={"env_vars": RUNTIME_ENV})
    os.environ["RAY_ADDRESS"] = local.address   # Ray's helper processes look the cluster up again
    local.wait_for_nodes()


def disconnect() -> None:
    import ray

    if ray.is_initialized():
        from ray import serve

        try:
            serve.shutdown()
        except Exception:
            pass
        ray.shutdown()


def deploy_on(cluster_cfg) -> str:
    """The application on the connected cluster, Serve's HTTP front on the head only (two fronts on one
    machine would want the same port); returns its base URL once every replica runs."""
    from ray import serve

    from recsys.serve import app

    s = cluster_cfg.serve
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": int(s.port)},
                logging_config={"log_level": "WARNING", "enable_access_log": False})
    serve.run(app.build_app(cluster_cfg), name=s.app_name, route_prefix=s.route_prefix)
    return f"http://127.0.0.1:{s.port}"


def mixed_paths(cfg, n: int, seed: int) -> list[str]:
    """n request paths, the three surfaces interleaved (recsys.bench.requests.sample_paths)."""
    import psycopg

    from recsys.bench.requests import sample_paths
    from recsys.services import Postgres

    per = n // len(SURFACES) + 1
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        lists = [sample_paths(conn, s, per, seed=seed) for s in SURFACES]
    return [p for group in zip(*lists) for p in group][:n]


def wait_for_replicas(app_name: str, want: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if running_replicas(app_name) == want:
            return True
        time.sleep(1)
    return False


def bench_autoscale(cfg, overrides: list[str] | None = None, docs: Path | None = None) -> dict[str, tuple[float, str]]:
    """Brings up the two-node cluster, deploys, runs the ramp `bench.autoscale_runs` times, tears the
    cluster down (and leaves this process disconnected from Ray); returns the figures (medians over the
    runs) and writes docs/benchmarks-autoscale.md."""
    from recsys.bench import cpu
    from recsys.bench.report import DOCS, machine
    from recsys.config import load_config
    from recsys.services.local_cluster import LocalCluster, free_port

    b = cfg.bench
    docs = docs or DOCS
    steps = [(float(r), float(s)) for r, s in b.autoscale_steps]
    window_s, tail_max_s = float(b.autoscale_window_s), float(b.autoscale_tail_max_s)
    environ = dict(os.environ)
    disconnect()
    ccfg = load_config(list(overrides or []) + cluster_overrides(free_port()))
    a, app_name = ccfg.serve.autoscaling, ccfg.serve.app_name
    root = tempfile.mkdtemp(prefix="rc-", dir="/tmp")   # short: Ray's sockets live under it
    local = LocalCluster(ccfg, root, workers=1, cpus=int(b.autoscale_cpus_per_node))
    load_before = os.getloadavg()[0]
    print(f"  load average before: {load_before:.2f} (1 min), {os.cpu_count()} cores")
    print(f"  two Ray nodes on this machine, {int(b.autoscale_cpus_per_node)} logical CPUs each; autoscaling "
          f"{a.min_replicas}-{a.max_replicas} replicas on {policy_of(a)}, at most "
          f"{ccfg.serve.max_replicas_per_node} a node (conf/serve/cluster.yaml); response cache off")
    runs: list[RampRun] = []
    started = time.monotonic()
    try:
        local.start()
        connect(local, ccfg)
        url = deploy_on(ccfg)
        print(f"  deployed at {url} after {time.monotonic() - started:.0f} s; nodes {local.node_ids()}")
        paths = mixed_paths(ccfg, int(b.autoscale_paths), seed=int(cfg.seed))
        ramp = Ramp(url, paths, int(b.autoscale_concurrency), float(b.http_timeout_s))
        ramp.run([(steps[0][0], 5.0)])   # warm-up, not measured
        for i in range(int(b.autoscale_runs)):
            if not wait_for_replicas(app_name, int(a.min_replicas), tail_max_s):
                print(f"  note: {running_replicas(app_name)} replicas, not {a.min_replicas}, before run {i + 1}")
            before = cpu.wait_idle(float(b.http_idle_cpu_pct), float(b.http_idle_wait_s))
            print(f"\n  run {i + 1} of {int(b.autoscale_runs)}: (req/s, s) {steps}; {before.note()}")
            run = ramp_once(ramp, app_name, steps, int(a.min_replicas), tail_max_s)
            run.before = before
            for w in run.windows(window_s):
                print(w.line())
            runs.append(run)
    finally:
        try:
            disconnect()
        finally:
            local.stop()
            os.environ.clear()
            os.environ.update(environ)
            shutil.rmtree(root, ignore_errors=True)
    figures = figures_of(runs, steps, int(a.min_replicas), int(a.max_replicas), load_before)
    for name, (value, unit) in figures.items():
        print(f"  {name:<52} {value:10.2f} {unit}")
    write_timeline(docs / "benchmarks-autoscale.md", runs, steps, window_s, figures, ccfg, machine())
    return figures


def policy_of(autoscaling) -> str:
    """The autoscaling rule in words, for the printout and the docs."""
    policy = autoscaling.get("policy")
    if policy and "BusyPolicy" in str(policy.get("policy_function", "")):
        target = (policy.get("policy_kwargs") or {}).get("target", 0.6)
        return f"the replicas' busy share (BusyPolicy, target {target} a replica)"
    return f"Serve's count of ongoing requests (target {autoscaling.get('target_ongoing_requests', 2)} a replica)"


def _step_bounds(steps: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out, t = [], 0.0
    for _, seconds in steps:
        out.append((t, t + seconds))
        t += seconds
    return out


def figures_of(runs: list[RampRun], steps: list[tuple[float, float]], lo: int, hi: int,
               load_before: float) -> dict[str, tuple[float, str]]:
    """Each figure the median over the runs. A step's p95 is over every request of the step."""
    med = statistics.median
    k = "serve.autoscale"
    bounds = _step_bounds(steps)
    peak = max(range(len(steps)), key=lambda i: steps[i][0])
    first_up = next(i for i, (r, _) in enumerate(steps) if r > steps[0][0]) if any(
        r > steps[0][0] for r, _ in steps) else 0
    figures: dict[str, tuple[float, str]] = {
        f"{k}.runs": (len(runs), "runs"),
        f"{k}.load_avg_1m_before": (med(r.before.loadavg_1m for r in runs) if all(r.before for r in runs)
                                    else load_before, "load"),   # median over the runs, each after the idle wait
        f"{k}.busy_runs": (sum(r.before is not None and not r.before.idle for r in runs), "runs"),
        f"{k}.configured_min_replicas": (lo, "replicas"), f"{k}.configured_max_replicas": (hi, "replicas"),
        f"{k}.max_replicas_reached": (med(max(c for _, c in r.samples) for r in runs), "replicas"),
        f"{k}.replicas_after_ramp_down": (med(r.samples[-1][1] for r in runs), "replicas"),
    }
    first = [first_at(r.samples, bounds[first_up][0], lambda c: c > lo) for r in runs]
    up = [first_at(r.samples, bounds[peak][0], lambda c: c >= hi) for r in runs]
    down = [first_at(r.samples, bounds[peak][1], lambda c: c <= lo) for r in runs]
    if all(f is not None for f in first):
        figures[f"{k}.first_added_s"] = (med(first), "s")   # from the first step above the start rate
    if all(u is not None for u in up):
        figures[f"{k}.scale_to_max_s"] = (med(up), "s")     # from the start of the peak step
    if all(d is not None for d in down):
        figures[f"{k}.scale_down_s"] = (med(down), "s")     # from the end of the peak step
    for i, (rate, seconds) in enumerate(steps):
        name = f"{k}.step{i + 1}_rate{rate:g}"
        per_run = [[a for a in r.answers if a.step == i] for r in runs]
        figures[f"{name}.p95_ms"] = (med(p95(ans) for ans in per_run), "ms")
        figures[f"{name}.ok_rps"] = (med(sum(200 <= a.status < 300 for a in ans) / seconds for ans in per_run), "req/s")
        figures[f"{name}.error_rate"] = (med(sum(not 200 <= a.status < 300 for a in ans) / max(len(ans), 1)
                                             for ans in per_run), "fraction")
        figures[f"{name}.replicas_at_end"] = (med(r.replicas_at(bounds[i][1]) for r in runs), "replicas")
    return figures


def write_timeline(path: Path, runs: list[RampRun], steps, window_s: float, figures: dict, ccfg,
                   where: str) -> None:
    """docs/benchmarks-autoscale.md: what ran, the figures per step, each run's timeline."""
    a = ccfg.serve.autoscaling
    k = "serve.autoscale"
    lines = ["## Autoscaling on two Ray nodes", "",
             f"`{COMMAND}` on {date.today().isoformat()}, {where}; load average before "
             f"{figures[f'{k}.load_avg_1m_before'][0]:.2f}. A head and a worker node on this machine "
             f"(recsys/services/local_cluster.py), HAProxy on the head; the fused application as "
             f"conf/serve/cluster.yaml shapes it: {a.min_replicas}-{a.max_replicas} replicas on "
             f"{policy_of(a)}, upscale delay {a.get('upscale_delay_s', 30)} s, "
             f"downscale delay {a.get('downscale_delay_s', 600)} s, at most {ccfg.serve.max_replicas_per_node} a node. "
             f"Open-loop load over the three surfaces, response cache off (every request a miss); after the "
             f"ramp the last rate goes on until the replicas are back at the minimum. "
             f"{len(runs)} run(s); each figure the median over them.", "",
             "| step | req/s asked | p95 ms | 2xx/s | errors | replicas at its end |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for i, (rate, seconds) in enumerate(steps):
        n = f"{k}.step{i + 1}_rate{rate:g}"
        lines.append(f"| {i + 1} ({seconds:g} s) | {rate:g} | {figures[n + '.p95_ms'][0]:.1f} | "
                     f"{figures[n + '.ok_rps'][0]:.1f} | {figures[n + '.error_rate'][0]:.1%} | "
                     f"{figures[n + '.replicas_at_end'][0]:g} |")
    first, up, down = (figures.get(f"{k}.{n}") for n in ("first_added_s", "scale_to_max_s", "scale_down_s"))
    lines += ["", f"Most replicas reached {figures[f'{k}.max_replicas_reached'][0]:g} (of {a.max_replicas}); "
              f"after the ramp {figures[f'{k}.replicas_after_ramp_down'][0]:g}. The first replica added "
              + (f"{first[0]:.0f} s after the load first rose" if first else "never in some run")
              + "; at the maximum " + (f"{up[0]:.0f} s into the peak step" if up else "never in some run")
              + "; back at the minimum " + (f"{down[0]:.0f} s after the peak step ended" if down else
                                            "not within the tail in some run")
              + " (medians; replicas are counted RUNNING, sampled every second).", ""]
    for n, run in enumerate(runs, 1):
        cond = f"; {run.before.note()}" if run.before is not None else ""
        lines += [f"Run {n} ({run.seconds:.0f} s{cond}), every {window_s:g} s:", "",
                  "| s | step | req/s | p50 ms | p95 ms | errors | replicas |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for w in run.windows(window_s):
            lines.append(f"| {w.start_s:.0f}-{w.end_s:.0f} | {w.step + 1 if w.step < len(steps) else 'after'} | "
                         f"{w.rate:.0f} | {w.p50_ms:.1f} | {w.p95_ms:.1f} | {w.errors} | {w.replicas} |")
        lines.append("")
    path.write_text("\n".join(lines))
