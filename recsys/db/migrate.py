"""Apply the SQL files in `migrations/` in order, once each, recorded in `schema_migrations`."""

from __future__ import annotations

from pathlib import Path

import psycopg

MIGRATIONS = Path(__file__).with_name("migrations")
LOCK_KEY = 7_424_242  # advisory lock: two `services up` at once apply each file once


def pending(applied: set[int]) -> list[tuple[int, Path]]:
    files = sorted((int(p.name.split("_", 1)[0]), p) for p in MIGRATIONS.glob("*.sql"))
    return [(version, path) for version, path in files if version not in applied]


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply pending migrations, each in its own transaction; return the names applied."""
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        names = []
        for version, path in pending(applied):
            with conn.transaction():
                conn.execute(path.read_text())
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, path.name))
            names.append(path.name)
        return names
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
