"""The dashboard's numbers: every function is one or two SQL queries over the rollups
(recsys/web/rollups.py), never over raw impressions, so each stays within `dashboard.query.p95_ms` on
1M impressions (`recsys bench --only dashboard`). Definitions match the canary's (recsys/release/metrics.py):
CTR = requests with a recommended product viewed / requests; add-to-cart rate and conversion likewise;
AOV = attributed revenue / requests that converted; revenue per impression = revenue / requests.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone

import psycopg

SERIES = """
SELECT hour, {key} AS key, sum(requests), sum(clicked), sum(carted), sum(converted), sum(revenue),
       max(latency_p50), max(latency_p95)
FROM rollup_traffic
WHERE hour >= %(since)s
GROUP BY hour, {key}
ORDER BY hour
"""


def _rates(requests: int, clicked: int, carted: int, converted: int, revenue: float) -> dict:
    n = requests or 1
    return {"requests": int(requests), "ctr": clicked / n, "add_to_cart_rate": carted / n,
            "conversion": converted / n, "aov": revenue / converted if converted else None,
            "revenue_per_impression": revenue / n}


def traffic(conn: psycopg.Connection, hours: float = 48, by: str = "surface") -> dict[str, list[dict]]:
    """{surface (or arm): [{hour, requests, ctr, add_to_cart_rate, conversion, aov,
    revenue_per_impression, latency_p50, latency_p95}, ...]} per hour over the last `hours`."""
    if by not in ("surface", "arm"):
        raise ValueError("by is surface or arm")
    since = datetime.now(timezone.utc) - timedelta(hours=hours)
    out: dict[str, list[dict]] = {}
    for hour, key, requests, clicked, carted, converted, revenue, p50, p95 in conn.execute(
            SERIES.format(key=by), {"since": since}):
        out.setdefault(key, []).append({"hour": hour.isoformat(), **_rates(requests, clicked, carted, converted,
                                                                             float(revenue)),
                                        "latency_p50": p50, "latency_p95": p95})
    return out


def totals(conn: psycopg.Connection, hours: float = 24) -> dict[str, dict]:
    """The same rates over the whole window, per surface and per arm (the overview's tiles)."""
    since = datetime.now(timezone.utc) - timedelta(hours=hours)
    out = {}
    for by in ("surface", "arm"):
        for key, requests, clicked, carted, converted, revenue in conn.execute(
                f"SELECT {by}, sum(requests), sum(clicked), sum(carted), sum(converted), sum(revenue) "
                f"FROM rollup_traffic WHERE hour >= %s GROUP BY {by} ORDER BY {by}", (since,)):
            out[f"{by}:{key}"] = _rates(requests, clicked, carted, converted, float(revenue))
    return out


def events_per_second(conn: psycopg.Connection, minutes: int = 60) -> list[dict]:
    """Events received per second, minute by minute, over the last `minutes`, per event type."""
    since = datetime.now(timezone.utc) - timedelta(minutes=minutes)
    return [{"minute": m.isoformat(), "type": t, "per_s": n / 60.0} for m, t, n in conn.execute(
        "SELECT minute, type, events FROM rollup_events WHERE minute >= %s ORDER BY minute, type", (since,))]


CATALOG = """
WITH shown AS (
    SELECT sku, sum(impressions) AS n FROM {table} WHERE {column} >= %(since)s GROUP BY sku
)
SELECT (SELECT count(*) FROM items),
       count(*),
       coalesce(sum(s.n), 0)::bigint,
       coalesce(sum(s.n) FILTER (WHERE h.sku IS NULL), 0)::bigint,
       coalesce(sum(s.n) FILTER (WHERE i.kind IN ('accessory', 'part') AND i.margin >= %(high_margin)s), 0)::bigint
FROM shown s
LEFT JOIN rollup_head_skus h USING (sku)
LEFT JOIN items i USING (sku)
"""


def catalog_health(conn: psycopg.Connection, high_margin: float) -> dict[str, dict]:
    """Over the last 24 h and 7 d: catalog coverage (SKUs shown at least once / SKUs in the catalog),
    the long-tail share of slot impressions (SKUs outside the popularity head), and the share that
    went to high-margin accessories and parts."""
    now = datetime.now(timezone.utc)
    windows = {"24h": ("rollup_sku_hour", "hour", now - timedelta(hours=24)),
               "7d": ("rollup_sku_day", "day", (now - timedelta(days=6)).date())}
    out = {}
    for name, (table, column, since) in windows.items():
        items, shown, slots, tail, high = conn.execute(
            CATALOG.format(table=table, column=column), {"since": since, "high_margin": high_margin}).fetchone()
        out[name] = {"catalog_skus": items, "skus_shown": shown, "slot_impressions": int(slots),
                     "coverage": shown / items if items else 0.0,
                     "long_tail_share": float(tail) / slots if slots else 0.0,
                     "high_margin_accessory_share": float(high) / slots if slots else 0.0}
    return out


ZERO = """
SELECT i.sku, i.title, i.category, i.brand, i.price_band, i.price, i.margin, i.stock, i.listed_at
FROM items i
WHERE i.listed_at <= %(listed_before)s
  AND NOT EXISTS (SELECT 1 FROM rollup_sku_day d WHERE d.sku = i.sku AND d.day >= %(since)s)
  AND (%(category)s::text IS NULL OR i.category = %(category)s)
  AND (%(brand)s::text IS NULL OR i.brand = %(brand)s)
  AND (%(price_band)s::int IS NULL OR i.price_band = %(price_band)s)
ORDER BY i.listed_at, i.sku
"""

ZERO_COLUMNS = ("sku", "title", "category", "brand", "price_band", "price", "margin", "stock", "listed_at")


def zero_impression_skus(conn: psycopg.Connection, after_h: float, category: str | None = None,
                         brand: str | None = None, price_band: int | None = None, days: int = 7,
                         limit: int | None = 500) -> tuple[int, list[dict]]:
    """SKUs listed at least `after_h` hours ago with no slot impression in the last `days` days
    (filtered by category, brand, price band): (how many, the first `limit` of them, oldest listing first)."""
    now = datetime.now(timezone.utc)
    params = {"listed_before": now - timedelta(hours=after_h), "since": (now - timedelta(days=days - 1)).date(),
              "category": category or None, "brand": brand or None, "price_band": price_band}
    rows = conn.execute(ZERO, params).fetchall()
    shown = rows if limit is None else rows[:limit]
    return len(rows), [dict(zip(ZERO_COLUMNS, r)) for r in shown]


def zero_impression_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=ZERO_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "listed_at": row["listed_at"].isoformat()})
    return buf.getvalue()


def filter_options(conn: psycopg.Connection) -> dict[str, list]:
    """The categories, brands and price bands the zero-impression filters offer."""
    def values(column: str) -> list:
        return [r[0] for r in conn.execute(
            f"SELECT DISTINCT {column} FROM items WHERE {column} IS NOT NULL ORDER BY 1")]

    return {"category": values("category"), "brand": values("brand"), "price_band": values("price_band")}


def freshness(conn: psycopg.Connection) -> dict:
    """When the rollups were last refreshed (the pages say how old their numbers are)."""
    row = conn.execute("SELECT through, refreshed_at FROM rollup_state WHERE name = 'dashboard'").fetchone()
    return {"through": row[0].isoformat() if row else None, "refreshed_at": row[1].isoformat() if row else None}


# Every query the dashboard's pages run, by name: what `recsys bench --only dashboard` times.
def page_queries(high_margin: float, after_h: float) -> dict:
    return {
        "traffic_by_surface_48h": lambda c: traffic(c, 48, "surface"),
        "traffic_by_arm_7d": lambda c: traffic(c, 24 * 7, "arm"),
        "totals_24h": lambda c: totals(c, 24),
        "events_per_second_60m": lambda c: events_per_second(c, 60),
        "catalog_health": lambda c: catalog_health(c, high_margin),
        "zero_impression_skus": lambda c: zero_impression_skus(c, after_h),
        "zero_impression_filtered": lambda c: zero_impression_skus(c, after_h, price_band=1),
        "filter_options": filter_options,
    }
