"""Served impressions into Postgres (request id, surface, user, SKUs in slot order, versions)."""

from __future__ import annotations

from datetime import datetime, timezone

import psycopg

COLUMNS = ("request_id", "ts", "surface", "user_id", "session_id", "context_skus", "skus", "sources",
           "model_version", "rule_set_version", "arm", "degraded")


def _row(imp: dict) -> tuple:
    imp = {**imp, "ts": datetime.fromtimestamp(float(imp["ts"]), tz=timezone.utc)}
    return tuple(imp.get(c) if c not in ("context_skus", "degraded") else (imp.get(c) or []) for c in COLUMNS)


def write_impressions(conn: psycopg.Connection, impressions: list[dict]) -> int:
    rows = [_row(imp) for imp in impressions]
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO impressions ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
            "ON CONFLICT (request_id) DO NOTHING", rows)
        return cur.rowcount
