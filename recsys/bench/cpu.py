"""Where the machine's CPU goes during a benchmark run, by process group, and whether the machine is
idle before one.

On a 2-core machine the load generator, Postgres, Redis, the broker and the consumer all share the
cores with Serve, so "ms of CPU per request" only explains a throughput figure when it is split by who
spent it. A run that starts while something else is busy measures that something too: `wait_idle`
waits for a quiet machine and says when it never came, so the run can be flagged instead of published
silently.
"""

from __future__ import annotations

import os
import re
import resource
import time
from dataclasses import dataclass

import psutil

# In the order tables print them; "generator" is the load generator, left out of per-request costs.
GROUPS = ("serve_replicas", "haproxy", "postgres", "redis", "broker", "consumer", "ray", "other", "generator")
SERVER_GROUPS = tuple(g for g in GROUPS if g != "generator")
RAY_DAEMONS = ("raylet", "gcs_server")
# Groups that another stack on the machine (a test suite's Ray, Postgres, broker) would also match.
STACK_GROUPS = frozenset({"serve_replicas", "consumer", "ray", "postgres", "broker", "haproxy"})


def group_of(name: str, cmdline: str) -> str:
    """The group of one process from its name and command line. Ray renames its workers' command lines
    (`ray::ServeReplica:recsys:RecsysApi`, `ray::ConsumerWorker.run`), which is what tells a Serve
    replica and a consumer actor from Ray's other workers."""
    name = name or ""
    if "ServeReplica:" in cmdline:
        return "serve_replicas"
    if "ConsumerWorker" in cmdline:
        return "consumer"
    if name == "wrk":
        return "generator"
    if "haproxy" in name or cmdline.startswith("haproxy") or "/haproxy " in cmdline:
        return "haproxy"
    if name.startswith("postgres") or cmdline.startswith("postgres"):
        return "postgres"
    if "redis-server" in name or "redis-server" in cmdline:
        return "redis"
    if "tansu" in name or "/tansu " in cmdline or cmdline.startswith("tansu"):
        return "broker"
    if name in RAY_DAEMONS or cmdline.startswith("ray::") or "/ray/" in cmdline or " -m ray." in cmdline:
        return "ray"
    return "other"


def stack_marks(cfg) -> re.Pattern:
    """What the command lines of this stack's root processes contain: its state folder (the Ray head's
    session, the Postgres data folder), the Ray head's and the broker's ports, HAProxy's folder."""
    ray_port, kafka_port = int(cfg.services.ray.port), int(cfg.services.kafka.port)
    return re.compile("|".join([re.escape(str(cfg.state_dir)), rf":{ray_port}\b", rf":{kafka_port}\b",
                                re.escape(f"recsys-haproxy-{ray_port}")]))


def snapshot(stack: re.Pattern | None = None) -> dict:
    """CPU seconds (user + system) of every process now, keyed by (pid, start time) so a reused pid is
    not mistaken for the old process; this process and its reaped children (wrk) are the generator; and
    the machine's busy seconds, to see how much of the machine the processes account for. With `stack`
    (stack_marks), a Ray, Postgres or broker process counts in its group only when it or a parent is
    this stack's; another one (a test suite's cluster running beside) is "other"."""
    infos = {}
    for proc in psutil.process_iter(["name", "cmdline", "cpu_times", "create_time", "ppid"]):
        if proc.info["cpu_times"] is not None and proc.pid != os.getpid():
            infos[proc.pid] = proc.info | {"cmd": " ".join(proc.info["cmdline"] or [])}
    procs = {}
    for pid, info in infos.items():
        group = group_of(info["name"] or "", info["cmd"])
        if stack is not None and group in STACK_GROUPS and not _in_stack(pid, infos, stack):
            group = "other"
        procs[(pid, info["create_time"])] = (group, info["cpu_times"].user + info["cpu_times"].system)
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    generator = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    return {"procs": procs, "generator": generator, "machine": _machine_busy_s()}


def _in_stack(pid: int, infos: dict, stack: re.Pattern) -> bool:
    seen = set()
    while pid in infos and pid not in seen:   # up the parents: a Ray worker's is the raylet
        if stack.search(infos[pid]["cmd"]):
            return True
        seen.add(pid)
        pid = infos[pid]["ppid"]
    return False


def used_since(before: dict, stack: re.Pattern | None = None) -> dict[str, float]:
    """CPU seconds per group since `before` (a process started in between counts from zero; one that
    ended in between is lost, which the "machine" total, beside the groups, shows)."""
    after = snapshot(stack)
    used = dict.fromkeys(GROUPS, 0.0)
    for key, (group, seconds) in after["procs"].items():
        used[group] += seconds - before["procs"].get(key, (group, 0.0))[1]
    used["generator"] += after["generator"] - before["generator"]
    used["machine"] = after["machine"] - before["machine"]
    return used


def _machine_busy_s() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


@dataclass
class Conditions:
    """The machine just before a run: 1-minute load average, CPU busy % over the last second, and
    whether that was under the threshold (a run that starts busy is flagged)."""
    loadavg_1m: float
    busy_pct: float
    idle: bool
    waited_s: float

    def note(self) -> str:
        waited = f" after {self.waited_s:.0f} s of waiting" if self.waited_s >= 1.5 else ""
        busy = "" if self.idle else "  BUSY"
        return f"load {self.loadavg_1m:4.2f}, CPU {self.busy_pct:3.0f}% before{waited}{busy}"


def wait_idle(threshold_pct: float, max_wait_s: float) -> Conditions:
    """Wait until the machine's CPU, over one second, is busy less than `threshold_pct` (all cores
    together), at most `max_wait_s`. The load average is read first: it is the figure people quote,
    though after a heavy run it stays high for a minute while the CPU is already idle."""
    loadavg = os.getloadavg()[0]
    start = time.monotonic()
    while True:
        busy = psutil.cpu_percent(interval=1.0)
        waited = time.monotonic() - start
        if busy < threshold_pct or waited >= max_wait_s:
            return Conditions(loadavg, busy, busy < threshold_pct, waited)


@dataclass
class Meter:
    """Measures one run: waits for an idle machine, then runs the work between two CPU snapshots."""
    idle_cpu_pct: float
    idle_wait_s: float
    stack: re.Pattern | None = None

    def measure(self, work):
        """(what work() returned, CPU seconds by group, the machine's conditions before)."""
        before = wait_idle(self.idle_cpu_pct, self.idle_wait_s)
        start = snapshot(self.stack)
        result = work()
        return result, used_since(start, self.stack), before
