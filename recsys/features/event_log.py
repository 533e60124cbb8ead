"""The offline event log in Postgres: batched COPY, idempotent by event_id."""

from __future__ import annotations

from typing import Iterable, Sequence

import psycopg

from recsys.features.events import Event

COLUMNS = ("event_id", "type", "user_id", "session_id", "sku", "ts", "device", "geo", "price", "quantity",
           "order_id", "surface", "request_id", "slot")


def event_row(e: Event) -> tuple:
    ctx = e.context
    return (e.event_id, e.type, e.user_id, e.session_id, e.sku, e.ts, e.device, e.geo, e.price, e.quantity,
            e.order_id, ctx.surface if ctx else None, ctx.request_id if ctx else None, ctx.slot if ctx else None)


def write_rows(conn: psycopg.Connection, rows: Iterable[Sequence]) -> int:
    """COPY rows (in COLUMNS order) into a staging table, then insert the new ones; return how many."""
    cols = ", ".join(COLUMNS)
    with conn.transaction():
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS events_staging (LIKE events INCLUDING DEFAULTS) "
                     "ON COMMIT DELETE ROWS")
        with conn.cursor() as cur:
            with cur.copy(f"COPY events_staging ({cols}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(f"INSERT INTO events ({cols}) SELECT DISTINCT ON (event_id) {cols} FROM events_staging "
                        "ON CONFLICT (event_id) DO NOTHING")
            return cur.rowcount


def write_events(conn: psycopg.Connection, events: list[Event]) -> int:
    return write_rows(conn, (event_row(e) for e in events))


def bestsellers(conn: psycopg.Connection, days: int, limit: int | None = None) -> list[tuple[str, float]]:
    """Purchases and carts (views barely) over the last `days` of the log: the static "before" rail."""
    rows = conn.execute(
        "SELECT sku, sum(CASE type WHEN 'purchase_completed' THEN 5 WHEN 'add_to_cart' THEN 2 ELSE 0.2 END)::float8 "
        "AS score FROM events WHERE ts > (SELECT max(ts) FROM events) - make_interval(days => %s) "
        "GROUP BY sku ORDER BY score DESC LIMIT %s", (int(days), limit)).fetchall()
    return [(sku, float(score)) for sku, score in rows]
