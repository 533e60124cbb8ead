"""A Ray cluster of two (or more) nodes on this one machine: a head started with `ray start --head`
and worker nodes started with `ray start --address`, each with a temp dir, ports and a custom resource
of its own (`head_node`, `worker_node`, `worker_node_2`, ...), so that work can be pinned to a node or
spread over them and one node can be killed alone.

It is how tests/test_two_node_cluster.py and `recsys bench --only autoscale` get the cluster the
cluster/ specs describe without a second machine. Every process of a node names the node's temp dir
on its command line (or is a child of one that does): `kill_node` and `stop` end exactly those, never
another Ray on the machine (`ray stop` would end them all).

Serve on such a cluster runs its HTTP front on the head only (`proxy_location="HeadOnly"`): two
proxies of one machine would want the same port.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from recsys.services.process import port_open, wait_for
from recsys.services.ray_head import ray_cli, ray_env

HEAD = "head_node"
WORKER = "worker_node"
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((LOOPBACK, port))
            return True
        except OSError:
            return False


def free_block(first: int, last: int, width: int = 100) -> int:
    """The start of a block of `width` ports between first and last whose first ports are free (Serve's
    replicas take their direct-ingress ports from it, below the kernel's ephemeral range)."""
    import random

    for _ in range(50):
        base = random.randrange(first // width, last // width) * width
        if all(_port_free(p) for p in range(base, base + 8)):
            return base
    raise RuntimeError(f"no free port block between {first} and {last}")


def head_overrides() -> list[str]:
    """Hydra overrides that give a config a Ray head of its own on free ports (with its job server and
    its own HAProxy ports): what `LocalCluster` starts for that config."""
    out = ["services.ray.address=null", f"services.ray.port={free_port()}", "services.ray.dashboard=true",
           f"services.ray.dashboard_port={free_port()}",
           f"services.ray.haproxy.metrics_port={free_port()}", f"services.ray.haproxy.stats_port={free_port()}",
           f"services.ray.haproxy.replica_http_ports={free_block(20000, 25000)}",
           f"services.ray.haproxy.replica_grpc_ports={free_block(25000, 30000)}"]
    return out + [f"services.ray.agent_ports.{name}={free_port()}" for name in
                  ("dashboard_agent_listen_port", "dashboard_agent_grpc_port", "metrics_export_port",
                   "runtime_env_agent_port")]


@dataclass
class Node:
    resource: str                  # the node's custom resource, {resource: 1}: also its name here
    temp_dir: Path
    args: list[str] = field(default_factory=list)
    gcs_port: int | None = None    # the head: its Ray client server names only the GCS address

    def processes(self) -> list:
        """The node's processes: those naming its temp dir (the head's: or `--address=<host>:<GCS port>`),
        and their descendants (the workers)."""
        import psutil

        mark, found = str(self.temp_dir), {}
        address = re.compile(rf"(^|\s)--address=\S+:{self.gcs_port}(\s|$)") if self.gcs_port else None
        for proc in psutil.process_iter(["cmdline"]):
            try:
                cmd = " ".join(proc.info["cmdline"] or [])
                if mark in cmd or (address is not None and "ray" in cmd and address.search(cmd)):
                    found[proc.pid] = proc
                    for child in proc.children(recursive=True):
                        found[child.pid] = child
            except psutil.Error:
                continue
        found.pop(os.getpid(), None)
        return list(found.values())


class LocalCluster:
    """`cfg.services.ray` names the head's ports (`head_overrides()`); worker nodes take free ports.
    `cpus` per node are logical CPUs: two nodes of 2 on a 2-core machine oversubscribe it, which is
    what a test of placement needs. `env`: more environment for every node's processes."""

    def __init__(self, cfg, root: Path | str, workers: int = 1, cpus: int = 2, object_store_bytes: int = 200_000_000,
                 env: dict[str, str] | None = None):
        self.cfg, self.extra_env = cfg, dict(env or {})
        self.root = Path(root).resolve()
        # A node's sockets live under its temp dir: a unix socket path has at most 107 bytes.
        if len(str(self.root)) > 48:
            raise ValueError(f"{self.root}: too long a path for Ray's sockets (48 characters at most)")
        r = cfg.services.ray
        self.port, self.dashboard_port = int(r.port), int(r.dashboard_port)
        self.cpus, self.object_store_bytes = int(cpus), int(object_store_bytes)
        self.nodes = [Node(HEAD, self.root / "head", gcs_port=self.port)]
        self.nodes += [Node(WORKER if i == 1 else f"{WORKER}_{i}", self.root / f"worker{i}") for i in range(1, workers + 1)]

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def job_address(self) -> str:
        return f"http://{LOOPBACK}:{self.dashboard_port}"

    def env(self) -> dict[str, str]:
        """What every node's `ray start` runs with: the project's Ray environment (HAProxy included) and
        this interpreter's bin first on PATH (a job's `python` is this environment's)."""
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        return {**env, **ray_env(self.cfg), **self.extra_env, "PATH": path}

    def _common(self, node: Node) -> list[str]:
        return [f"--num-cpus={self.cpus}", f"--resources={json.dumps({node.resource: 1})}",
                f"--object-store-memory={self.object_store_bytes}", f"--node-ip-address={LOOPBACK}",
                f"--temp-dir={node.temp_dir}", "--disable-usage-stats",
                f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
                f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}"]

    def _ray_start(self, node: Node, extra: list[str]) -> None:
        node.temp_dir.mkdir(parents=True, exist_ok=True)
        node.args = [ray_cli(), "start", *extra, *self._common(node)]
        done = subprocess.run(node.args, env=self.env(), capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            raise RuntimeError(f"ray start ({node.resource}) failed: {done.stderr.strip()[-2000:]}")

    def start(self) -> "LocalCluster":
        if port_open(LOOPBACK, self.port):
            raise RuntimeError(f"port {self.port} is taken: a cluster of its own needs free ports (head_overrides())")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        head = self.nodes[0]
        self._ray_start(head, ["--head", f"--port={self.port}", "--include-dashboard=true",
                               f"--dashboard-host={LOOPBACK}", f"--dashboard-port={self.dashboard_port}",
                               f"--ray-client-server-port={free_port()}"])
        for node in self.nodes[1:]:
            self._ray_start(node, [f"--address={self.address}"])
        wait_for(self._jobs_ready, 60, "the Ray job server", interval=0.5)

    def _jobs_ready(self) -> bool:
        from recsys.services.ray_head import job_server_ready

        return job_server_ready(self.job_address)

    def node(self, resource: str) -> Node:
        return next(n for n in self.nodes if n.resource == resource)

    def node_ids(self) -> dict[str, str]:
        """{custom resource: Ray node id} of the nodes alive now (needs a connected driver)."""
        import ray

        names = {n.resource for n in self.nodes}
        return {name: node["NodeID"] for node in ray.nodes() if node["Alive"]
                for name in names & set(node.get("Resources", {}))}

    def wait_for_nodes(self, timeout: float = 60) -> None:
        wait_for(lambda: len(self.node_ids()) == len(self.nodes), timeout, f"{len(self.nodes)} Ray nodes", 0.5)

    def kill_node(self, resource: str = WORKER) -> int:
        """SIGKILL every process of one node at once, as when its machine dies. Returns how many."""
        procs = self.node(resource).processes()
        for proc in procs:
            try:
                proc.send_signal(signal.SIGKILL)
            except Exception:
                pass
        return len(procs)

    def stop(self) -> None:
        """Ends every process of every node (workers first), whatever state they are in."""
        import psutil

        for node in reversed(self.nodes):
            procs = node.processes()
            for proc in procs:
                try:
                    proc.terminate()
                except psutil.Error:
                    pass
            _, alive = psutil.wait_procs(procs, timeout=5)
            for proc in alive:
                try:
                    proc.kill()
                except psutil.Error:
                    pass
            psutil.wait_procs(alive, timeout=5)
        if self.cfg.services.ray.haproxy.enabled:   # the folder ray_env() made for this head's HAProxy
            shutil.rmtree(Path(tempfile.gettempdir()) / f"recsys-haproxy-{self.port}", ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_gone(cluster: LocalCluster, resource: str, timeout: float = 30) -> float:
    """Seconds until the processes of a killed node are all gone."""
    started = time.monotonic()
    wait_for(lambda: not cluster.node(resource).processes(), timeout, f"the processes of {resource} to end", 0.2)
    return time.monotonic() - started
