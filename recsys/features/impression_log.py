"""Served impressions into Postgres (request id, surface, user, SKUs in slot order, versions)."""

from __future__ import annotations

from datetime import datetime, timezone

import psycopg

from recsys.db import partitions

COLUMNS = ("request_id", "ts", "surface", "user_id", "session_id", "context_skus", "skus", "sources",
           "model_version", "rule_set_version", "arm", "canary_id", "degraded", "latency_ms")
TS = COLUMNS.index("ts")


def _row(imp: dict) -> tuple:
    imp = {**imp, "ts": datetime.fromtimestamp(float(imp["ts"]), tz=timezone.utc)}
    return tuple(imp.get(c) if c not in ("context_skus", "degraded") else (imp.get(c) or []) for c in COLUMNS)


def write_impressions(conn: psycopg.Connection, impressions: list[dict]) -> int:
    """Insert impressions, once each: `impressions` is partitioned by month on ts with the primary key
    (request_id, ts), and a replayed impression carries the same request id and ts."""
    rows = [_row(imp) for imp in impressions]
    if not rows:
        return 0
    for attempt in (1, 2):
        partitions.ensure_for(conn, "impressions", [row[TS] for row in rows], by_database=attempt == 2)
        try:
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO impressions ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
                    "ON CONFLICT (request_id, ts) DO NOTHING", rows)
                return cur.rowcount
        except psycopg.errors.CheckViolation as exc:   # a month dropped since, or naive ts read elsewhere
            if attempt == 2 or not partitions.is_missing_partition(exc):
                raise
            partitions.forget(conn, "impressions")
    raise AssertionError("unreachable")
