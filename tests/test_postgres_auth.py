"""The embedded Postgres asks for a generated password on TCP; no DSN password is printed."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

from recsys.services import Postgres
from recsys.services.postgres import PG_HBA, redact
from tests.conftest import TEST_OVERRIDES, free_port, make_cfg


def test_tcp_needs_the_generated_password(stack, pg):
    service = Postgres(stack)
    c = stack.services.postgres
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"postgresql://postgres@{c.host}:{c.port}/{c.database}", connect_timeout=3)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(f"postgresql://postgres:wrong@{c.host}:{c.port}/{c.database}", connect_timeout=3)
    with psycopg.connect(service.dsn, connect_timeout=3) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    assert stat.S_IMODE(service.password_file.stat().st_mode) == 0o600
    password = service.password_file.read_text().strip()
    assert len(password) >= 32 and password in service.dsn
    assert (service.data_dir / "pg_hba.conf").read_text() == PG_HBA
    host_rules = [line.split() for line in PG_HBA.splitlines() if line.startswith("host")]
    assert host_rules and all(rule[-1] == "scram-sha-256" for rule in host_rules)
    # The server was given a SCRAM verifier, never the password: its log cannot contain it.
    assert password not in (service.data_dir / "log").read_text(errors="replace")


def test_status_and_health_print_no_password(stack):
    service = Postgres(stack)
    password = service.password_file.read_text().strip()
    health = service.health()
    assert health.ok and password not in health.line()
    out = subprocess.run([sys.executable, "-m", "recsys.cli", "services", "status", *TEST_OVERRIDES],
                         capture_output=True, text=True, timeout=120)
    assert "postgres  up" in out.stdout, out.stdout + out.stderr
    assert password not in out.stdout + out.stderr


def test_redact_hides_passwords_in_every_dsn_form():
    assert redact("postgresql://postgres:s3cr%2Ft@db:5432/recsys") == "postgresql://postgres:***@db:5432/recsys"
    assert redact("postgresql://postgres@db/recsys") == "postgresql://postgres@db/recsys"
    assert redact("postgresql://u@db/x?sslmode=require&password=s3cret") == \
        "postgresql://u@db/x?sslmode=require&password=***"
    assert redact("host=db user=u password=s3cret dbname=x") == "host=db user=u password=*** dbname=x"
    assert redact("host=db password='s3 cret' dbname=x") == "host=db password=*** dbname=x"
    assert redact("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact(None) is None


def test_a_data_dir_initialised_with_trust_gets_the_password_on_start():
    """An install from before passwords: pg_hba trusts TCP and no password file exists. `start` (the
    server running, then after a restart) closes TCP to anyone without the password."""
    state = tempfile.mkdtemp(prefix="recsys-pgauth-")
    cfg = make_cfg(f"state_dir={state}", f"services.postgres.port={free_port()}")
    service = Postgres(cfg)
    c = cfg.services.postgres
    no_password = f"postgresql://postgres@{c.host}:{c.port}/postgres"
    try:
        service.start()
        # Make it look like an old install: trust on TCP, no password file.
        (service.data_dir / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n")
        service.password_file.unlink()
        with service._admin() as admin:
            admin.execute("ALTER ROLE postgres PASSWORD NULL")
            admin.execute("SELECT pg_reload_conf()")
        psycopg.connect(no_password, connect_timeout=3).close()          # trust, as before

        service.start()                                                   # the server keeps running
        assert stat.S_IMODE(service.password_file.stat().st_mode) == 0o600
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(no_password, connect_timeout=3)
        first = service.password_file.read_text()
        with psycopg.connect(Postgres(cfg).dsn, connect_timeout=3) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)

        assert service.stop()
        service.start()                                                   # a restart keeps the password
        assert service.password_file.read_text() == first
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(no_password, connect_timeout=3)
        with psycopg.connect(Postgres(cfg).dsn, connect_timeout=3) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        service.stop()
        shutil.rmtree(state, ignore_errors=True)


def test_an_external_dsn_is_used_as_given():
    dsn = "postgresql://app:given@127.0.0.1:1/recsys"   # nothing listens: no packet leaves the machine
    service = Postgres(make_cfg(f"services.postgres.dsn={dsn}"))
    assert service.external and service.dsn == dsn
    assert "given" not in service.health().line()   # (it cannot connect; the line still hides it)


def test_no_source_file_prints_or_logs_a_dsn():
    """A cheap guard: code that prints or logs something named dsn goes through redact()."""
    root = Path(__file__).resolve().parents[1] / "recsys"
    offenders = []
    for path in root.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if ("print(" in line or "log." in line or "logger." in line) and "dsn" in line.lower() \
                    and "redact(" not in line:
                offenders.append(f"{path.relative_to(root.parent)}:{n}: {line.strip()}")
    assert offenders == []
