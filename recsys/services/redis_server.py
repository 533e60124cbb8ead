"""Redis at the configured URL; when nothing answers on a loopback URL, start the machine's redis-server."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

import redis

from recsys.services.base import Health, redact
from recsys.services.process import read_pid, terminate, wait_for

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class Redis:
    name = "redis"

    def __init__(self, cfg):
        self.url = cfg.services.redis.url
        parsed = urlparse(self.url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 6379
        run = Path(cfg.state_dir)
        self.pid_file = run / "run" / f"redis-{self.port}.pid"
        self.log_file = run / "logs" / f"redis-{self.port}.log"
        self.dir = run / "redis"

    def _ping(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def start(self) -> None:
        if self._ping():
            return
        if self.host not in LOOPBACK:
            raise ConnectionError(f"Redis at {redact(self.url)} does not answer (external URL: start it there)")
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed: apt-get install -y redis-server")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        import subprocess

        subprocess.run(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "yes", "--pidfile", str(self.pid_file.resolve()),
             "--logfile", str(self.log_file.resolve()), "--dir", str(self.dir.resolve())],
            check=True,
        )
        wait_for(self._ping, 10, "redis-server")

    @property
    def managed(self) -> bool:
        return read_pid(self.pid_file) is not None

    def stop(self) -> bool:
        """Stop Redis only when recsys started it: a shared instance is never touched."""
        return terminate(self.pid_file)

    def health(self) -> Health:
        ok = self._ping()
        return Health(self.name, ok, redact(self.url), self.managed, "" if ok else "no answer")
