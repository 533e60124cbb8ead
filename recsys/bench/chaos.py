"""Chaos, as numbers: faults injected one after another into a running stack under a mixed load, and
what each cost, counted (docs/reliability.md explains every figure).

For each fault: the load runs a few seconds, a burst of events is accepted (so the consumer is inside
a batch), the fault is injected, the load goes on through the fault and the recovery, then the harness
waits until every accepted event is in the Postgres event log (or, for a fault that may lose events,
until the log stops growing) and counts: requests sent, non-2xx answers (GET and POST apart), degraded
answers (a 200 naming a missing stage or source in `degraded`), events accepted (202), events in the
log, lost (accepted, never logged), duplicates (rows beyond one per event_id), and seconds to recover.

The faults run against a stack of the bench's own (`chaos_config`): its own state folder, Postgres,
redis-server, broker, Ray head and Serve application on free loopback ports, so a Redis shared with
other programs (the machine's 6379) or a demo's services are never stopped. The load only ever goes
to 127.0.0.1, bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import orjson
import psycopg

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SURFACES = ("homepage_hero", "pdp_fbt", "cart_upsell")
FAULTS = ("consumer_kill", "redis_restart", "postgres_kill", "broker_kill", "replica_kill")


# --- the mixed load ------------------------------------------------------------------------------

@dataclass
class Answer:
    kind: str              # "get" or "post"
    due: float             # wall-clock time the request was scheduled for
    answered: float        # wall-clock time the answer (or the failure) came
    status: int            # HTTP status; 0 when nothing answered (refused, reset, timed out)
    latency_ms: float      # from the scheduled start: waiting for a free connection is latency too
    degraded: bool = False
    accepted: tuple[str, ...] = ()   # event_ids a 202 acknowledged

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class MixedLoad:
    """Open loop: requests start on a fixed schedule whatever the server does, in a thread of their own
    (so faults can be injected meanwhile). GETs for the three surfaces in turn, and a share of POST
    /v1/events, each carrying one event with a unique event_id and a user id under `prefix`.

    Bounded: at most `rate * max_s` requests, none scheduled after `max_s` or after `stop()`; only to a
    loopback address."""

    def __init__(self, base_url: str, paths: dict[str, list[str]], skus: list[str], rate: float, max_s: float,
                 prefix: str, key: str | None = None, event_share: float = 0.25, timeout_s: float = 5.0,
                 concurrency: int = 64, users: int = 200, seed: int = 0):
        host = urlsplit(base_url).hostname
        if host not in LOOPBACK:
            raise ValueError(f"the chaos load only goes to this machine's loopback, not {host!r}")
        if not skus:
            raise ValueError("events need real SKUs (the consumer dead-letters unknown ones)")
        self.base_url, self.paths, self.skus = base_url, paths, skus
        self.rate, self.max_s, self.prefix, self.key = float(rate), float(max_s), prefix, key
        self.event_share, self.timeout_s, self.concurrency, self.users = event_share, timeout_s, concurrency, users
        self.rng = np.random.default_rng(seed)
        self.answers: list[Answer] = []
        self.started_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._count = 0
        self._lock = threading.Lock()   # events are made by the load's thread and by burst()

    # events ---------------------------------------------------------------------------------------
    def event(self) -> dict:
        """One event of this run: unique event_id, a user under the run's prefix, a real SKU."""
        with self._lock:
            i = self._count
            self._count += 1
            kind = "add_to_cart" if self.rng.random() < 0.2 else "product_viewed"
            sku = self.skus[int(self.rng.integers(len(self.skus)))]
        body = {"event_id": f"{self.prefix}{i}-{uuid.uuid4().hex[:12]}", "type": kind,
                "user_id": f"{self.prefix}{i % self.users}", "session_id": f"{self.prefix}s{i % self.users}",
                "sku": sku, "device": "mobile", "geo": "US-CA"}
        if kind == "add_to_cart":
            body["price"] = 19.99
        return body

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def burst(self, n: int, batch: int = 500) -> list[str]:
        """`n` events at once in batches (outside the schedule), answered before this returns: a backlog
        the consumer is busy with when a fault comes. The acknowledged ones count as accepted."""
        import httpx

        accepted: list[str] = []
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            for start in range(0, n, batch):
                events = [self.event() for _ in range(min(batch, n - start))]
                t = time.time()
                try:
                    r = client.post("/v1/events", json=events, headers=self.headers)
                    status, ids = r.status_code, tuple(r.json().get("event_ids") or ()) if r.status_code == 202 else ()
                except (httpx.HTTPError, ValueError):
                    status, ids = 0, ()
                self.answers.append(Answer("post", t, time.time(), status, (time.time() - t) * 1000, False, ids))
                accepted += ids
        return accepted

    # the schedule ---------------------------------------------------------------------------------
    def start(self) -> "MixedLoad":
        self.started_at = time.time()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="mixed-load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """No request is scheduled after this; waits for the ones in flight (each bounded by timeout_s)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 30)

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    async def _run(self) -> None:
        n = max(1, int(self.rate * self.max_s))
        gate = asyncio.Semaphore(self.concurrency)
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        kinds = self.rng.random(n) < self.event_share
        pending: set[asyncio.Task] = set()
        async with aiohttp.ClientSession(base_url=self.base_url, connector=connector, timeout=timeout) as client:
            begin = time.perf_counter() + 0.05
            for i in range(n):
                delay = begin + i / self.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self._stop.is_set():
                    break
                task = asyncio.create_task(self._one(client, gate, i, "post" if kinds[i] else "get"))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.gather(*pending)

    async def _one(self, client: aiohttp.ClientSession, gate: asyncio.Semaphore, i: int, kind: str) -> None:
        due = time.time()
        due_perf = time.perf_counter()
        status, degraded, accepted = 0, False, ()
        async with gate:
            if time.perf_counter() - due_perf > self.timeout_s:   # queued past the client's patience
                self.answers.append(Answer(kind, due, time.time(), 0, (time.perf_counter() - due_perf) * 1000))
                return
            try:
                if kind == "get":
                    surface = SURFACES[i % len(SURFACES)]
                    options = self.paths[surface]
                    async with client.get(options[(i // len(SURFACES)) % len(options)]) as r:
                        body = await r.read()
                        status = r.status
                    degraded = status == 200 and b'"degraded":[' in body and b'"degraded":[]' not in body
                else:
                    async with client.post("/v1/events", data=orjson.dumps(self.event()),
                                           headers={"Content-Type": "application/json", **self.headers}) as r:
                        body = await r.read()
                        status = r.status
                    if status == 202:
                        accepted = tuple(orjson.loads(body).get("event_ids") or ())
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                status = 0
        self.answers.append(Answer(kind, due, time.time(), status, (time.perf_counter() - due_perf) * 1000,
                                   degraded, accepted))


# --- counting in the event log -------------------------------------------------------------------

def logged_events(dsn: str, prefix: str) -> tuple[dict[str, float], int]:
    """({event_id: received_at epoch}, rows) for the users under `prefix`. More rows than event_ids are
    duplicates (the log is meant to hold each event_id once)."""
    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
        rows = conn.execute("SELECT event_id, extract(epoch FROM min(received_at))::float8, count(*) FROM events "
                            "WHERE user_id LIKE %s GROUP BY event_id", (pattern,)).fetchall()
    return {r[0]: float(r[1]) for r in rows}, sum(int(r[2]) for r in rows)


def count_events(dsn: str, prefix: str) -> tuple[int, int]:
    """(rows, distinct event_ids) in the log for the users under `prefix`: the bench's own query,
    `SELECT count(*), count(DISTINCT event_id) FROM events WHERE user_id LIKE '<prefix>%'`."""
    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
        rows, distinct = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM events WHERE user_id LIKE %s",
                                      (pattern,)).fetchone()
    return int(rows), int(distinct)


@dataclass
class Fault:
    """`inject()` breaks something; `restore()` mends it after the fault's duration (None: the system
    is expected to heal by itself, e.g. a supervised consumer or a Serve replica). `may_lose`: losing
    accepted events is a known property of this fault (the memory-only broker), so the wait for the log
    ends once it stops growing. `skip`: why this fault cannot run here."""

    name: str
    inject: Callable[[], None]
    restore: Callable[[], None] | None = None
    may_lose: bool = False
    skip: str | None = None
    note: str = ""


@dataclass
class FaultResult:
    name: str
    requests: int = 0
    gets: int = 0
    posts: int = 0
    get_non_2xx: int = 0
    post_non_2xx: int = 0
    degraded: int = 0
    accepted: int = 0
    logged: int = 0
    lost: int = 0
    duplicates: int = 0
    unacknowledged_logged: int = 0   # logged although the POST was not answered 202 (a retry would be deduped)
    recover_s: float = 0.0
    recovered: bool = True
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)

    HEADER = (f"  {'fault':<15} {'sent':>6} {'GET!2xx':>8} {'POST!2xx':>8} {'degraded':>8} {'accepted':>8} "
              f"{'logged':>7} {'lost':>5} {'dup':>4} {'recover_s':>9}")

    def line(self) -> str:
        if self.skipped:
            return f"  {self.name:<15} skipped: {self.skipped}"
        flag = "" if self.recovered else "  NOT RECOVERED"
        return (f"  {self.name:<15} {self.requests:>6} {self.get_non_2xx:>8} {self.post_non_2xx:>8} {self.degraded:>8} "
                f"{self.accepted:>8} {self.logged:>7} {self.lost:>5} {self.duplicates:>4} {self.recover_s:>9.1f}{flag}")

    def figures(self, group: str = "chaos") -> dict[str, tuple[float, str]]:
        if self.skipped:
            return {}
        k = f"{group}.{self.name}"
        return {f"{k}.requests": (self.requests, "requests"), f"{k}.get_non_2xx": (self.get_non_2xx, "answers"),
                f"{k}.post_non_2xx": (self.post_non_2xx, "answers"), f"{k}.degraded": (self.degraded, "answers"),
                f"{k}.events_accepted": (self.accepted, "events"), f"{k}.events_logged": (self.logged, "events"),
                f"{k}.events_lost": (self.lost, "events"), f"{k}.duplicates": (self.duplicates, "events"),
                f"{k}.recover_s": (self.recover_s, "s"), f"{k}.recovered": (float(self.recovered), "flag")}


@dataclass
class Timing:
    before_s: float = 5.0      # load before the fault
    fault_s: float = 5.0       # how long a fault that is restored lasts
    after_s: float = 10.0      # load after the restore (through the recovery)
    recover_timeout_s: float = 120.0   # wait for the log at most this long after the load stopped
    settle_s: float = 10.0     # a fault that may lose events: the log unchanged this long ends the wait
    fresh_s: float = 2.0       # an event logged within this of its 202 was not held up by the fault
    burst: int = 1000          # events accepted at once just before the fault


def run_fault(fault: Fault, base_url: str, dsn: str, paths: dict[str, list[str]], skus: list[str], run_id: str,
              rate: float, timing: Timing, key: str | None = None, event_share: float = 0.25,
              timeout_s: float = 5.0, log: Callable[[str], None] = print) -> FaultResult:
    """One fault under load, then the wait for the event log, then the counts."""
    result = FaultResult(fault.name)
    if fault.skip:
        result.skipped = fault.skip
        return result
    prefix = f"chaos-{run_id}-{fault.name}-"
    max_s = timing.before_s + timing.fault_s + timing.after_s + 60   # a bound; stop() ends it sooner
    load = MixedLoad(base_url, paths, skus, rate, max_s, prefix, key, event_share, timeout_s).start()
    try:
        time.sleep(timing.before_s)
        if timing.burst:
            load.burst(timing.burst)
        time.sleep(0.1)   # the consumer is now inside the burst's batch
        injected_at = time.time()
        try:
            fault.inject()
        except Exception as exc:   # nothing was broken: nothing to count
            result.skipped = f"could not be injected: {exc}"
            log(result.line())
            return result
        if fault.restore is not None:
            time.sleep(timing.fault_s)
            try:
                fault.restore()
            except Exception as exc:
                result.recovered = False
                result.notes.append(f"restore failed: {exc}")
        restored_at = time.time() if fault.restore is not None else injected_at
        time.sleep(timing.after_s)
    finally:
        load.stop()
    answers = list(load.answers)
    accepted = {eid: a.answered for a in answers for eid in a.accepted}
    logged, rows = _wait_for_log(dsn, prefix, set(accepted), fault.may_lose, timing, result)

    result.requests = len(answers)
    result.gets = sum(a.kind == "get" for a in answers)
    result.posts = result.requests - result.gets
    result.get_non_2xx = sum(a.kind == "get" and not a.ok for a in answers)
    result.post_non_2xx = sum(a.kind == "post" and not a.ok for a in answers)
    result.degraded = sum(a.degraded for a in answers)
    result.accepted = len(accepted)
    result.logged = len(logged)
    result.lost = len(set(accepted) - set(logged))
    result.duplicates = rows - len(logged)
    result.unacknowledged_logged = len(set(logged) - set(accepted))
    result.recover_s = _recovered_after(answers, accepted, logged, restored_at, timing.fresh_s)
    if not result.recovered:
        result.recover_s = max(result.recover_s, time.time() - restored_at)
    log(result.line())
    return result


def _wait_for_log(dsn: str, prefix: str, accepted: set[str], may_lose: bool, timing: Timing,
                  result: FaultResult) -> tuple[dict[str, float], int]:
    """Poll the log until it holds every accepted event; a fault that may lose events ends the wait
    once the log has not grown for `settle_s`. A database that does not answer yet is polled again."""
    deadline = time.monotonic() + timing.recover_timeout_s
    logged, rows, last_change, last_count = {}, 0, time.monotonic(), -1
    while True:
        try:
            logged, rows = logged_events(dsn, prefix)
        except psycopg.Error:
            pass
        if accepted <= set(logged):
            return logged, rows
        if len(logged) != last_count:
            last_count, last_change = len(logged), time.monotonic()
        elif may_lose and time.monotonic() - last_change > timing.settle_s:
            return logged, rows
        if time.monotonic() > deadline:
            result.recovered = False
            result.notes.append(f"{len(accepted - set(logged))} accepted events not logged after "
                                f"{timing.recover_timeout_s:.0f} s")
            return logged, rows
        time.sleep(0.5)


def _recovered_after(answers: list[Answer], accepted: dict[str, float], logged: dict[str, float],
                     restored_at: float, fresh_s: float) -> float:
    """Seconds from the restore (or, for a fault that heals by itself, the injection) until the system
    was whole again: the later of the answer to the last request sent after the restore that failed
    (non-2xx, no answer) or came back degraded, and the moment the backlog the fault held up was logged
    (the last event that reached the log more than `fresh_s` after its 202). Lost events do not count
    here: they are counted as lost."""
    bad = [a.answered for a in answers if a.due >= restored_at and (not a.ok or a.degraded)]
    late = [logged[e] for e, t in accepted.items() if e in logged and logged[e] - t > fresh_s]
    whole_at = max([restored_at, *bad, *late])
    return max(0.0, whole_at - restored_at)


# --- the bench's own stack -----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_range(first: int, last: int, width: int = 100) -> int:
    """A port block of `width` starting between first and last whose first ports are free (Serve's
    replicas take theirs from it: below the kernel's ephemeral range, where free_port()'s come from)."""
    rng = np.random.default_rng()
    for _ in range(50):
        base = int(rng.integers(first // width, last // width)) * width
        if all(_port_free(p) for p in range(base, base + 8)):
            return base
    raise RuntimeError(f"no free port block between {first} and {last}")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def stack_state_dir(cfg) -> Path:
    return Path(cfg.state_dir) / "chaos"


def chaos_overrides(cfg) -> list[str]:
    """Overrides that give the chaos stack services of its own: state folder, Postgres, a redis-server it
    starts itself (never the shared 6379), the broker, a Ray head, Serve and HAProxy, all on free ports."""
    state = stack_state_dir(cfg)
    redis_port = free_port()
    if redis_port == 6379:
        redis_port = free_port()
    out = [f"state_dir={state}", "services.postgres.dsn=null", f"services.postgres.port={free_port()}",
           "services.kafka.bootstrap=null", f"services.kafka.port={free_port()}",
           f"services.redis.url=redis://127.0.0.1:{redis_port}/0", "services.redis.key_prefix=recsys-chaos:",
           "services.ray.address=null", f"services.ray.port={free_port()}", "services.ray.dashboard=false",
           f"services.ray.dashboard_port={free_port()}", f"serve.port={free_port()}",
           f"services.ray.haproxy.metrics_port={free_port()}", f"services.ray.haproxy.stats_port={free_port()}",
           f"services.ray.haproxy.replica_http_ports={_free_range(20000, 25000)}",
           f"services.ray.haproxy.replica_grpc_ports={_free_range(25000, 30000)}"]
    out += [f"services.ray.agent_ports.{name}={free_port()}" for name in
            ("dashboard_agent_listen_port", "dashboard_agent_grpc_port", "metrics_export_port",
             "runtime_env_agent_port")]
    return out + [str(o) for o in cfg.bench.get("chaos_stack_overrides", [])]


def chaos_config(cfg, overrides: list[str] | None):
    """(config, overrides) of the chaos stack: the user's overrides, then the stack's own."""
    from recsys.config import load_config

    extra = list(overrides or []) + chaos_overrides(cfg)
    return load_config(extra), extra


def _stop_previous(cfg) -> None:
    """A previous chaos stack (its overrides are saved in its state folder) is stopped first, so its
    Postgres releases the data folder before one starts on new ports."""
    from recsys import services
    from recsys.config import load_config

    saved = stack_state_dir(cfg) / "stack.json"
    try:
        previous = json.loads(saved.read_text())["overrides"]
    except (OSError, ValueError, KeyError):
        return
    try:
        services.down(load_config(previous))
    except Exception as exc:
        print(f"  previous chaos stack: {exc}")


def _save(cfg, overrides: list[str]) -> None:
    path = stack_state_dir(cfg) / "stack.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"overrides": overrides}))


def _disconnect_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _postmaster_pid(pg) -> int | None:
    try:
        return int((Path(pg.data_dir) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _kill(pid: int | None, what: str) -> None:
    if pid is None:
        raise RuntimeError(f"{what}: no process to kill")
    os.kill(pid, signal.SIGKILL)


def _retry(action: Callable[[], None], what: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            action()
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come back in {timeout_s:.0f} s: {exc}") from exc
            time.sleep(1.0)


def replica_pids(ccfg) -> list[int]:
    """OS pids of the Serve replicas of the chaos stack's ingress: processes of its Ray head (found by
    the head's own temp folder, so another head's replicas never match) titled `ray::ServeReplica:...`."""
    from recsys.services import Ray
    from recsys.services.ray_head import _head_processes

    head = Ray(ccfg)
    out = []
    for proc in _head_processes(str(head.temp_dir), int(ccfg.services.ray.port)):
        try:
            cmd = " ".join(proc.cmdline())
        except Exception:
            continue
        if "ServeReplica" in cmd and "recsys_api" in cmd:
            out.append(proc.pid)
    return sorted(set(out))


def stack_faults(ccfg) -> tuple[list[Fault], Callable[[], None]]:
    """The five faults against the chaos stack, in order, and a wait for the consumers to run (each
    fault starts from a whole system)."""
    from recsys.features import supervisor
    from recsys.services import Kafka, Postgres, Redis
    from recsys.services.process import read_pid

    pg, kafka, redis_service = Postgres(ccfg), Kafka(ccfg), Redis(ccfg)

    def kill_consumers() -> None:
        pids = supervisor.consumer_pids(ccfg)
        if not pids:
            raise RuntimeError("no feature consumer is running")
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)

    def consumers_back() -> None:
        def running() -> None:
            if not supervisor.consumer_pids(ccfg):
                raise RuntimeError("no consumer actor answers")
        _retry(running, "the feature consumer", 60)

    redis_skip = None
    if not redis_service.managed or redis_service.port == 6379:
        redis_skip = (f"Redis at {redis_service.url} was not started by recsys: it is never stopped "
                      "(the chaos stack starts its own redis-server)")

    def kill_replica() -> None:
        pids = replica_pids(ccfg)
        if len(pids) < 2:
            raise RuntimeError(f"{len(pids)} Serve replica(s) found: killing one would take the service down")
        os.kill(pids[0], signal.SIGKILL)

    return [
        Fault("consumer_kill", kill_consumers, None,
              note="SIGKILL of every feature consumer actor mid-batch; Ray restarts it (recsys.features.supervisor)"),
        Fault("redis_restart", redis_service.stop, lambda: _retry(redis_service.start, "redis-server"), skip=redis_skip,
              note="the chaos stack's own redis-server stopped, then started again (empty: it keeps no snapshot)"),
        Fault("postgres_kill", lambda: _kill(_postmaster_pid(pg), "postgres"),
              lambda: _retry(pg.start, "postgres"),
              note="SIGKILL of the postmaster, then recsys.services.Postgres(cfg).start() (crash recovery)"),
        Fault("broker_kill", lambda: _kill(read_pid(kafka.pid_file), "the broker"),
              lambda: _retry(kafka.start, "the broker"), may_lose=True,
              note="SIGKILL of the tansu broker, then recsys.services.Kafka(cfg).start(); memory-only storage"),
        Fault("replica_kill", kill_replica, None,
              note="SIGKILL of one of the two Serve replicas; Serve starts a new one"),
    ], consumers_back


def ensure_key(cfg) -> str | None:
    """A storefront key for POST /v1/events (None before API keys existed)."""
    try:
        from recsys.demo import ensure_demo_keys
    except ImportError:
        return None
    return ensure_demo_keys(cfg)[1].get("storefront")


def bench_chaos(cfg, overrides: list[str] | None = None) -> dict[str, tuple[float, str]]:
    """Every fault in `bench.chaos_faults` against the chaos stack; the stack is stopped afterwards
    (its data folder stays, so the next run skips loading and training)."""
    from recsys import services
    from recsys.bench.requests import sample_paths
    from recsys.demo import bring_up, wait_healthy
    from recsys.services import Postgres

    b = cfg.bench
    run_id = time.strftime("%Y%m%d%H%M%S")
    wanted = [f for f in b.get("chaos_faults", FAULTS)]
    load_before = os.getloadavg()[0]
    print(f"  load average before the run: {load_before:.2f} (1 min), {os.cpu_count()} cores")
    environ = dict(os.environ)
    _disconnect_ray()
    _stop_previous(cfg)
    ccfg, coverrides = chaos_config(cfg, overrides)
    _save(cfg, coverrides)
    figures: dict[str, tuple[float, str]] = {"chaos.load_avg_1m_before": (load_before, "load")}
    try:
        print(f"  the chaos stack (its own services, state in {ccfg.state_dir}):")
        url = bring_up(ccfg, coverrides)
        key = ensure_key(ccfg)
        dsn = Postgres(ccfg).dsn
        rate = float(b.chaos_rate)
        timing = Timing(float(b.chaos_before_s), float(b.chaos_fault_s), float(b.chaos_after_s),
                        float(b.chaos_recover_timeout_s), float(b.chaos_settle_s), float(b.chaos_fresh_s),
                        int(b.chaos_burst_events))
        n_paths = int(rate * 120 / len(SURFACES)) + 1   # a path recurs after the 90 s cache TTL: misses
        with psycopg.connect(dsn, autocommit=True) as conn:
            paths = {s: sample_paths(conn, s, n_paths, seed=int(cfg.seed)) for s in SURFACES}
            skus = [r[0] for r in conn.execute("SELECT sku FROM items ORDER BY sku LIMIT 2000")]
        faults, consumers_back = stack_faults(ccfg)
        print(f"\n  {rate:.0f} req/s ({float(b.chaos_event_share):.0%} POST /v1/events), {timing.before_s:.0f} s "
              f"before each fault, {timing.fault_s:.0f} s of fault, {timing.after_s:.0f} s after; "
              f"a burst of {timing.burst} events just before each")
        print(FaultResult.HEADER)
        for fault in faults:
            if fault.name not in wanted:
                continue
            try:   # each fault starts from a whole system
                wait_healthy(url)
                consumers_back()
            except Exception as exc:
                print(f"  {fault.name:<15} not run, the stack did not recover from the previous fault: {exc}")
                break
            result = run_fault(fault, url, dsn, paths, skus, run_id, rate, timing, key,
                               float(b.chaos_event_share), float(b.http_timeout_s))
            for note in result.notes:
                print(f"    {note}")
            if fault.name == "broker_kill" and result.lost:
                print(f"    {result.lost} acknowledged events were in the memory-only broker, not yet consumed, "
                      f"when it died (docs/reliability.md: what a production Kafka needs to lose none)")
            figures.update(result.figures())
    finally:
        _disconnect_ray()   # before its head goes
        try:
            services.down(ccfg)
        finally:
            os.environ.clear()
            os.environ.update(environ)
    return figures
