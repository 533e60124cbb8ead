"""The web process (recsys/web: the dashboard and the store) as a background process with a pid file:
`make demo` starts it after Serve, `recsys services down` stops it. It is the project's own process,
not an external service: nothing to connect to when it is not running."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from recsys.services.base import Health
from recsys.services.process import port_open, read_pid, spawn, terminate, wait_for


class Web:
    name = "web"

    def __init__(self, cfg, overrides: list[str] | None = None):
        self.host, self.port = str(cfg.web.host), int(cfg.web.port)
        self.url = f"http://{self.host}:{self.port}"
        self.overrides = list(overrides or [])
        self.pid_file = Path(cfg.state_dir) / "run" / f"web-{self.port}.pid"
        self.log_file = Path(cfg.state_dir) / "logs" / f"web-{self.port}.log"

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self, timeout_s: float = 60) -> None:
        """Start it unless one of ours answers (restarted: a new demo may bring new code or settings)."""
        if read_pid(self.pid_file) is not None:
            terminate(self.pid_file)
        if port_open(self.host, self.port):
            raise OSError(f"port {self.port} is taken by another process: set web.port= (or RECSYS_WEB_PORT)")
        spawn([sys.executable, "-m", "recsys.web", *self.overrides], self.pid_file, self.log_file)
        wait_for(self._healthy, timeout_s, f"the web process (log: {self.log_file})", interval=0.3)

    def stop(self) -> bool:
        return terminate(self.pid_file)

    @property
    def managed(self) -> bool:
        return read_pid(self.pid_file) is not None

    def health(self) -> Health:
        ok = self._healthy()
        return Health(self.name, ok, self.url, self.managed, "" if ok else "not running (make demo starts it)")
