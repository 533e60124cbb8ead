"""Monthly range partitions of `events` and `impressions` (migration 004) and the retention that drops
them whole.

Writers call `ensure_for(conn, table, timestamps)` before a write: the months a batch covers are
created when missing (`recsys_month_partition()` in SQL, safe under concurrency) and remembered in
this process, so a batch in a known month costs no round trip. There is no DEFAULT partition (a row
there would block creating its month later), so a row whose month has no partition fails with
"no partition of relation ... found for row"; `is_missing_partition` recognises it, and the writers
then `forget` what they knew (retention may have dropped a month meanwhile) and try once more with
the months as Postgres reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Sequence

import psycopg

TABLES = ("events", "impressions")
NAME = re.compile(r"^(?P<table>[a-z_]+)_p(?P<year>\d{4})_(?P<month>\d{2})$")

_known: dict[tuple, set[tuple[int, int]]] = {}   # (host, port, database, table) -> months that exist


def _key(conn: psycopg.Connection, table: str) -> tuple:
    info = conn.info
    return info.host, info.port, info.dbname, table


def month_of(ts: datetime) -> tuple[int, int]:
    """(year, month) of a timestamp in UTC; a naive timestamp is read as UTC."""
    offset = ts.utcoffset()
    if offset:
        ts = ts - offset
    return ts.year, ts.month


def months_of(values: Sequence) -> set[tuple[int, int]] | None:
    """The UTC months of `values`; None when they are not all datetimes (the database then decides)."""
    if not values:
        return set()
    try:
        lo, hi = min(values), max(values)
        if not (isinstance(lo, datetime) and isinstance(hi, datetime)):
            return None
        first, last = month_of(lo), month_of(hi)
        if first == last:                        # the usual batch: one month, two comparisons a row
            return {first}
        return {month_of(v) for v in values}
    except (TypeError, ValueError, AttributeError, OverflowError):
        return None


def ensure_months(conn: psycopg.Connection, table: str, months: set[tuple[int, int]]) -> None:
    known = _known.setdefault(_key(conn, table), set())
    missing = sorted(months - known)
    if missing:
        starts = [datetime(y, m, 1, tzinfo=timezone.utc) for y, m in missing]
        conn.execute("SELECT recsys_month_partition(%s::regclass, m) FROM unnest(%s::timestamptz[]) m",
                     (table, starts))
        known.update(missing)


def ensure_for(conn: psycopg.Connection, table: str, timestamps: Sequence, by_database: bool = False) -> None:
    """Make sure every month of `timestamps` has its partition of `table`. The months are computed
    here, or by Postgres (`by_database`, and for strings) exactly as it will read the values: a naive
    timestamp is in the session's time zone there."""
    months = None if by_database else months_of(timestamps)
    if months is not None:
        ensure_months(conn, table, months)
        return
    # Let Postgres read them (an unreadable one fails here as a data error, like the write would).
    values = [v if v is None or isinstance(v, str) else v.isoformat() for v in timestamps]
    rows = conn.execute(
        "SELECT m FROM (SELECT DISTINCT date_trunc('month', t AT TIME ZONE 'UTC') AS m "
        "FROM unnest(%s::timestamptz[]) t WHERE t IS NOT NULL) months", (values,)).fetchall()
    ensure_months(conn, table, {(m.year, m.month) for (m,) in rows})


def forget(conn: psycopg.Connection, table: str) -> None:
    _known.pop(_key(conn, table), None)


def is_missing_partition(exc: BaseException) -> bool:
    return isinstance(exc, psycopg.errors.CheckViolation) and "no partition of relation" in str(exc)


@dataclass(frozen=True)
class Partition:
    table: str
    name: str
    start: datetime   # inclusive, UTC
    end: datetime     # exclusive, UTC


def partitions(conn: psycopg.Connection, table: str) -> list[Partition]:
    """The monthly partitions of `table`, oldest first (named <table>_pYYYY_MM by migration 004)."""
    names = [r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass", (table,))]
    out = []
    for name in names:
        m = NAME.match(name)
        if m and m["table"] == table:
            start = datetime(int(m["year"]), int(m["month"]), 1, tzinfo=timezone.utc)
            out.append(Partition(table, name, start, _next_month(start)))
    return sorted(out, key=lambda p: p.start)


def _next_month(d: datetime) -> datetime:
    return d.replace(year=d.year + d.month // 12, month=d.month % 12 + 1)


def apply_retention(conn: psycopg.Connection, days: dict[str, int], dry_run: bool = False,
                    now: datetime | None = None) -> list[str]:
    """Drop every partition whose whole month is older than its table's retention (`days`, e.g.
    {"events": 400, "impressions": 90}); create this month's and next month's partitions ahead.
    Returns one line per partition dropped (or that would be, with `dry_run`) and per one created.

    A partition is detached CONCURRENTLY (PostgreSQL 14+) before it is dropped, so neither readers
    nor the ingestion writers wait on an exclusive lock of the parent. `conn` must be in autocommit."""
    now = now or datetime.now(timezone.utc)
    lines = []
    for table, keep_days in days.items():
        cutoff = now - timedelta(days=int(keep_days))
        pending = {r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass AND i.inhdetachpending", (table,))}
        for p in partitions(conn, table):
            if p.end > cutoff:
                continue
            rows = conn.execute(f'SELECT count(*) FROM "{p.name}"').fetchone()[0]
            what = (f"{table}: {'would drop' if dry_run else 'dropped'} {p.name} "
                    f"[{p.start:%Y-%m-%d}, {p.end:%Y-%m-%d}) with {rows} rows (older than {keep_days} days)")
            if not dry_run:
                # A detach interrupted earlier is finished with FINALIZE; otherwise detach concurrently.
                mode = "FINALIZE" if p.name in pending else "CONCURRENTLY"
                conn.execute(f'ALTER TABLE "{table}" DETACH PARTITION "{p.name}" {mode}')
                conn.execute(f'DROP TABLE "{p.name}"')
                forget(conn, table)
            lines.append(what)
        this_month = datetime(now.year, now.month, 1, tzinfo=timezone.utc)
        ahead = {month_of(this_month), month_of(_next_month(this_month))}
        existing = {month_of(p.start) for p in partitions(conn, table)}
        for y, m in sorted(ahead - existing):
            lines.append(f"{table}: {'would create' if dry_run else 'created'} {table}_p{y:04d}_{m:02d}")
        if not dry_run:
            forget(conn, table)
            ensure_months(conn, table, ahead - existing)
    return lines
