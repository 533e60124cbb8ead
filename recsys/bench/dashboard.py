"""The dashboard's queries on 1M impressions (`recsys bench --only dashboard`).

A scratch database on the same Postgres server (`<database>_bench_dashboard`, dropped afterwards; the
live one is never touched), migrated like the real one, holds a 12k-SKU catalog and `impressions`
requests of 12 slots spread over the last 7 days (three surfaces; popular SKUs far more often, a third of
the catalog never; a canary arm on the last two days), with the events attributed to them (views on ~6%
of rails, add-to-carts, purchases). The rollups are backfilled from it (timed), then every query of the
dashboard's pages (`recsys.web.metrics.page_queries`) runs `calls` times; per run, each query's p95.
Figures, the median of `runs` runs:

  dashboard.query.p95_ms                the slowest page query's p95 (the target: <= 200 ms)
  dashboard.query.<name>.p95_ms          each query's
  dashboard.rollup.backfill_s            the first refresh: 7 days of rollups from nothing
  dashboard.rollup.refresh_s             a later refresh (the minute-by-minute cost)
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg

from recsys.db import partitions
from recsys.db.migrate import migrate

COMMAND = "recsys bench --only dashboard"

ITEMS = """
INSERT INTO items (sku, title, category, brand, kind, price, margin, price_band, stock, listed_at)
SELECT 'B' || lpad(g::text, 6, '0'), 'Bench item ' || g, 'cat' || (g %% 40), 'brand' || (g %% 25),
       (ARRAY['device', 'accessory', 'part'])[1 + (g %% 3)], 10 + (g %% 500), ((g * 7919) %% 70) / 100.0,
       1 + (g %% 5), g %% 20, now() - ((g %% 30) || ' days')::interval
FROM generate_series(1, %(n)s::int) g
"""

# 12 slots from a skewed draw over the catalog's first two thirds (the last third is never shown)
IMPRESSIONS = """
INSERT INTO impressions (request_id, ts, surface, user_id, skus, sources, model_version, arm, latency_ms)
SELECT 'bench-' || g, ts, (ARRAY['homepage_hero', 'pdp_fbt', 'cart_upsell'])[1 + (g %% 3)], 'u' || (g %% 60000),
       ARRAY(SELECT 'B' || lpad((1 + floor(%(shown)s * power(random(), 2.5)) + 0 * g)::int::text, 6, '0')
             FROM generate_series(1, 12)),
       ARRAY(SELECT 'two_tower' FROM generate_series(1, 12)), 'bench',
       CASE WHEN ts > now() - interval '2 days' AND g %% 10 = 0 THEN 'canary' ELSE 'live' END,
       8 + 40 * power(random(), 4)
FROM (SELECT g, now() - random() * interval '7 days' AS ts FROM generate_series(%(lo)s::int, %(hi)s::int) g) s
"""

EVENTS = """
INSERT INTO events (event_id, type, user_id, sku, ts, price, quantity, order_id, surface, request_id, slot)
SELECT i.request_id || '-' || t.type, t.type, i.user_id, i.skus[1], i.ts + interval '2 minutes', 25, 1,
       CASE WHEN t.type = 'purchase_completed' THEN 'o-' || i.request_id END, i.surface, i.request_id, 0
FROM impressions i
JOIN (VALUES ('product_viewed', 0.06), ('add_to_cart', 0.02), ('purchase_completed', 0.006)) t(type, p)
  ON abs(hashtext(i.request_id || t.type)) %% 1000 < t.p * 1000
WHERE i.request_id >= %(lo)s AND i.request_id < %(hi)s
"""


def scratch_dsn(dsn: str, name: str) -> str:
    return dsn.rsplit("/", 1)[0] + "/" + name


def build(admin_dsn: str, dsn: str, name: str, n_impressions: int, n_items: int) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        conn.execute(ITEMS, {"n": n_items})
        now = datetime.now(timezone.utc)
        partitions.ensure_for(conn, "impressions", [now - timedelta(days=8), now])
        partitions.ensure_for(conn, "events", [now - timedelta(days=8), now + timedelta(hours=1)])
        step = 100_000
        for lo in range(1, n_impressions + 1, step):
            conn.execute(IMPRESSIONS, {"lo": lo, "hi": min(lo + step - 1, n_impressions),
                                       "shown": int(n_items * 2 / 3)})
        for prefix in "0123456789":   # request ids 'bench-<g>': ten slices by first digit
            conn.execute(EVENTS, {"lo": f"bench-{prefix}", "hi": f"bench-{prefix}~"})
        conn.execute("ANALYZE")


def time_queries(dsn: str, cfg, calls: int) -> dict[str, float]:
    from recsys.web.metrics import page_queries

    queries = page_queries(float(cfg.web.high_margin), float(cfg.web.zero_impression_after_h))
    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, query in queries.items():
            query(conn)   # warm
            ms = []
            for _ in range(calls):
                t = time.perf_counter()
                query(conn)
                ms.append((time.perf_counter() - t) * 1000)
            out[name] = float(np.percentile(ms, 95))
    return out


def bench_dashboard(cfg) -> dict[str, tuple[float, str]]:
    from recsys.services import Postgres
    from recsys.web.rollups import refresh

    import os

    b = cfg.bench
    print(f"  load average before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
    pg = Postgres(cfg)
    pg.start()
    name = f"{cfg.services.postgres.database}_bench_dashboard"
    dsn, admin_dsn = scratch_dsn(pg.dsn, name), scratch_dsn(pg.dsn, "postgres")
    started = time.monotonic()
    build(admin_dsn, dsn, name, int(b.dashboard_impressions), int(b.dashboard_items))
    print(f"  {int(b.dashboard_impressions):,} impressions, {int(b.dashboard_items):,} SKUs in {name}: "
          f"{time.monotonic() - started:.0f} s")
    try:
        runs, backfills, refreshes = [], [], []
        for run in range(int(b.dashboard_runs)):
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("TRUNCATE rollup_traffic, rollup_sku_day, rollup_sku_hour, rollup_events, "
                             "rollup_head_skus, rollup_state")
                backfills.append(refresh(conn, cfg)["seconds"])
                refreshes.append(refresh(conn, cfg)["seconds"])
            runs.append(time_queries(dsn, cfg, int(b.dashboard_calls)))
            print(f"  run {run + 1}: backfill {backfills[-1]:.1f} s, refresh {refreshes[-1]:.1f} s, slowest query "
                  f"p95 {max(runs[-1].values()):.1f} ms ({max(runs[-1], key=runs[-1].get)})")
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    figures = {f"dashboard.query.{q}.p95_ms": (statistics.median(r[q] for r in runs), "ms") for q in runs[0]}
    figures["dashboard.query.p95_ms"] = (statistics.median(max(r.values()) for r in runs), "ms")
    figures["dashboard.rollup.backfill_s"] = (statistics.median(backfills), "s")
    figures["dashboard.rollup.refresh_s"] = (statistics.median(refreshes), "s")
    figures["dashboard.impressions"] = (float(b.dashboard_impressions), "impressions")
    for k, (v, unit) in sorted(figures.items()):
        print(f"  {k:<52} {v:10.1f} {unit}")
    return figures
