"""SQL rollups the dashboard reads, so that no page scans impressions or events (1M impressions are
12M slots): per hour, surface and arm the requests and what followed from them; slot impressions per
SKU and day (and hour, for the last 24 h); events per minute; the popularity head.

`refresh` recomputes the recent window, `[through - recompute_h, now)`, from scratch: deleting and
re-inserting those buckets makes it idempotent, and events attributed to an impression up to
`recompute_h` after it are counted (later ones are not: a rail's effect is over by then). The first
refresh of an empty database starts `backfill_days` back, one day at a time, as does `recsys rollups
--full` (for impressions written with older timestamps: a backfill, a simulation on a past clock). The web process runs it
every `refresh_s` under an advisory lock, so two web processes never do the work twice.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone

import psycopg

from recsys.release.metrics import ATTRIBUTED

log = logging.getLogger(__name__)

LOCK_ID = 7_300_012   # pg_advisory_xact_lock: one refresher at a time across processes
NAME = "dashboard"

TRAFFIC = """
INSERT INTO rollup_traffic (hour, surface, arm, requests, slots, clicked, carted, converted, revenue,
                            latency_p50, latency_p95)
SELECT date_trunc('hour', i.ts), i.surface, coalesce(i.arm, 'live'), count(*), sum(cardinality(i.skus)),
       count(*) FILTER (WHERE e.views > 0), count(*) FILTER (WHERE e.carts > 0),
       count(*) FILTER (WHERE e.orders > 0), coalesce(sum(e.revenue), 0),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY i.latency_ms),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY i.latency_ms)
FROM impressions i
LEFT JOIN (""" + ATTRIBUTED.format(until="AND ts < %(attributed_until)s") + """) e USING (request_id)
WHERE i.ts >= %(start)s AND i.ts < %(end)s
GROUP BY 1, 2, 3
"""

SKU_DAY = """
INSERT INTO rollup_sku_day (day, sku, impressions)
SELECT (i.ts AT TIME ZONE 'UTC')::date, s.sku, count(*)
FROM impressions i, unnest(i.skus) AS s(sku)
WHERE i.ts >= %(start)s AND i.ts < %(end)s
GROUP BY 1, 2
"""

SKU_HOUR = """
INSERT INTO rollup_sku_hour (hour, sku, impressions)
SELECT date_trunc('hour', i.ts), s.sku, count(*)
FROM impressions i, unnest(i.skus) AS s(sku)
WHERE i.ts >= %(start)s AND i.ts < %(end)s
GROUP BY 1, 2
"""

EVENTS = """
INSERT INTO rollup_events (minute, type, events)
SELECT date_trunc('minute', received_at), type, count(*)
FROM events
WHERE received_at >= %(start)s AND received_at < %(end)s
GROUP BY 1, 2
"""

HEAD = """
INSERT INTO rollup_head_skus (sku)
SELECT sku FROM events
WHERE type = 'product_viewed' AND ts >= %(since)s
GROUP BY sku
ORDER BY count(*) DESC, sku
LIMIT (SELECT ceil(%(share)s * count(*)) FROM items)
"""


def _day_start(t: datetime) -> datetime:
    return t.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def refresh(conn: psycopg.Connection, cfg, now: datetime | None = None, full: bool = False) -> dict:
    """Recompute the rollups' recent window (all of it the first time, or with `full`: traffic written
    with older timestamps, a backfill or a simulation on a past clock, is counted only then); what was
    done, with timings. Returns {"skipped": True} when another process holds the refresh."""
    import time

    r = cfg.web.rollups
    now = now or datetime.now(timezone.utc)
    started = time.perf_counter()
    with conn.transaction():
        if not conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (LOCK_ID,)).fetchone()[0]:
            return {"skipped": True}
        row = conn.execute("SELECT through FROM rollup_state WHERE name = %s", (NAME,)).fetchone()
        through = row[0] if row and not full else now - timedelta(days=float(r.backfill_days))
        # whole days for the daily SKU table, whole hours for the hourly ones
        start = _day_start(min(through, now) - timedelta(hours=float(r.recompute_h)))
        conn.execute("DELETE FROM rollup_traffic WHERE hour >= %s", (start,))
        conn.execute("DELETE FROM rollup_sku_day WHERE day >= %s", (start.date(),))
        conn.execute("DELETE FROM rollup_sku_hour WHERE hour >= %s OR hour < %s",
                     (start, now - timedelta(hours=float(r.keep_hourly_h))))
        conn.execute("DELETE FROM rollup_events WHERE minute >= %s", (start,))
        day = start
        while day < now:   # a day at a time: a backfill of 1M impressions stays a series of small sorts
            end = min(day + timedelta(days=1), now)
            window = {"start": day, "since": day, "end": end, "attributed_until": end + timedelta(hours=float(r.recompute_h))}
            conn.execute(TRAFFIC, window)
            conn.execute(SKU_DAY, window)
            if end > now - timedelta(hours=float(r.keep_hourly_h)):
                conn.execute(SKU_HOUR, {"start": max(day, now - timedelta(hours=float(r.keep_hourly_h))), "end": end})
            conn.execute(EVENTS, window)
            day = end
        conn.execute("DELETE FROM rollup_head_skus")
        conn.execute(HEAD, {"since": now - timedelta(days=float(cfg.web.head_days)), "share": float(cfg.web.head_share)})
        conn.execute("INSERT INTO rollup_state (name, through, refreshed_at) VALUES (%s, %s, now()) "
                     "ON CONFLICT (name) DO UPDATE SET through = EXCLUDED.through, refreshed_at = now()", (NAME, now))
    return {"skipped": False, "from": start.isoformat(), "through": now.isoformat(),
            "seconds": round(time.perf_counter() - started, 3)}


class Refresher:
    """A daemon thread of the web process: `refresh` every `web.rollups.refresh_s`, logging failures
    (Postgres down) and trying again next time instead of stopping."""

    def __init__(self, cfg, dsn: str):
        self.cfg, self.dsn = cfg, dsn
        self._stop = threading.Event()
        self.last: dict | None = None
        self.thread = threading.Thread(target=self._loop, name="rollups", daemon=True)

    def start(self) -> "Refresher":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def refresh_now(self) -> dict:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            self.last = refresh(conn, self.cfg)
        return self.last

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh_now()
            except Exception as exc:   # Postgres down or restarting: the next tick tries again
                log.warning("rollups not refreshed: %s", exc)
            self._stop.wait(float(self.cfg.web.rollups.refresh_s))
