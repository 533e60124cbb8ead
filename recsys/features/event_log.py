"""The offline event log in Postgres: batched COPY, idempotent by event_id."""

from __future__ import annotations

from typing import Iterable, Sequence

import psycopg

from recsys.db import partitions
from recsys.features.events import Event

COLUMNS = ("event_id", "type", "user_id", "session_id", "sku", "ts", "device", "geo", "price", "quantity",
           "order_id", "surface", "request_id", "slot")


def event_row(e: Event) -> tuple:
    ctx = e.context
    return (e.event_id, e.type, e.user_id, e.session_id, e.sku, e.ts, e.device, e.geo, e.price, e.quantity,
            e.order_id, ctx.surface if ctx else None, ctx.request_id if ctx else None, ctx.slot if ctx else None)


# An event_id already logged with a timestamp this close is the same event (a replay, or a client's
# retry stamped anew): the window of the online store's dedupe (features.dedupe_ttl_s).
DEDUPE_S = 14 * 86400
TS = COLUMNS.index("ts")


def write_rows(conn: psycopg.Connection, rows: Iterable[Sequence], dedupe_s: int = DEDUPE_S) -> int:
    """COPY rows (in COLUMNS order) into a staging table, then insert the new ones; return how many.

    `events` is partitioned by month on ts with the primary key (event_id, ts), so an event_id is
    refused when it is already logged with a ts within `dedupe_s` of the new one: the anti-join probes
    the primary key of the (at most two) partitions that window touches, once per row (a LATERAL ...
    LIMIT 1, so the planner never turns it into a hash join over the whole log). One INSERT per batch; the
    batch's months get their partitions first (no round trip when this process has seen them)."""
    rows = rows if isinstance(rows, list) else list(rows)
    if not rows:
        return 0
    for attempt in (1, 2):
        partitions.ensure_for(conn, "events", [row[TS] for row in rows], by_database=attempt == 2)
        try:
            return _insert(conn, rows, int(dedupe_s))
        except psycopg.errors.CheckViolation as exc:   # a month dropped since, or naive ts read elsewhere
            if attempt == 2 or not partitions.is_missing_partition(exc):
                raise
            partitions.forget(conn, "events")
    raise AssertionError("unreachable")


STAGING = "CREATE TEMP TABLE IF NOT EXISTS events_staging (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"


def insert_sql(dedupe_s: int) -> str:
    """The staged rows whose event_id is not logged within `dedupe_s` of their ts, once each."""
    cols = ", ".join(COLUMNS)
    window = f"interval '{int(dedupe_s)} seconds'"
    return (f"INSERT INTO events ({cols}) SELECT DISTINCT ON (event_id) {cols} FROM events_staging s "
            "LEFT JOIN LATERAL (SELECT true AS seen FROM events e WHERE e.event_id = s.event_id "
            f"AND e.ts BETWEEN s.ts - {window} AND s.ts + {window} LIMIT 1) logged ON true "
            "WHERE logged.seen IS NULL ON CONFLICT (event_id, ts) DO NOTHING")


def _insert(conn: psycopg.Connection, rows: list[Sequence], dedupe_s: int) -> int:
    with conn.transaction():
        conn.execute(STAGING)
        with conn.cursor() as cur:
            with cur.copy(f"COPY events_staging ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(insert_sql(dedupe_s))
            return cur.rowcount


def write_events(conn: psycopg.Connection, events: list[Event], dedupe_s: int = DEDUPE_S) -> int:
    return write_rows(conn, [event_row(e) for e in events], dedupe_s)


def head_skus(conn: psycopg.Connection, days: int, share: float) -> frozenset[str]:
    """The most-interacted `share` of the catalog over the last `days` of the log (events of any type):
    the head; every other SKU is the long tail (the same split as recsys.train.metrics.long_tail_mask)."""
    n = conn.execute("SELECT round(count(*) * %s)::int FROM items", (float(share),)).fetchone()[0]
    rows = conn.execute(
        "SELECT sku FROM events WHERE ts > (SELECT max(ts) FROM events) - make_interval(days => %s) "
        "GROUP BY sku ORDER BY count(*) DESC, sku LIMIT %s", (int(days), int(n))).fetchall()
    return frozenset(sku for (sku,) in rows)


def bestsellers(conn: psycopg.Connection, days: int, limit: int | None = None) -> list[tuple[str, float]]:
    """Purchases and carts (views barely) over the last `days` of the log: the static "before" rail."""
    rows = conn.execute(
        "SELECT sku, sum(CASE type WHEN 'purchase_completed' THEN 5 WHEN 'add_to_cart' THEN 2 ELSE 0.2 END)::float8 "
        "AS score FROM events WHERE ts > (SELECT max(ts) FROM events) - make_interval(days => %s) "
        "GROUP BY sku ORDER BY score DESC LIMIT %s", (int(days), limit)).fetchall()
    return [(sku, float(score)) for sku, score in rows]
