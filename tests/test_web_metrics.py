"""The dashboard's numbers from the SQL rollups (recsys/web/rollups.py, metrics.py) against the real
Postgres: attribution by request id per surface and arm, idempotent recomputation, the 72-hour rule for
zero-impression SKUs with its filters and CSV, and the catalog-health shares. Rows the test writes carry
a surface, request ids and SKUs of its own, and are deleted afterwards (one Postgres for the suite)."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from recsys.db import partitions
from recsys.features.impression_log import write_impressions
from recsys.web import metrics
from recsys.web.rollups import refresh

SURFACE = "webtest_surface"


@pytest.fixture
def own_rows(world, pg):
    """Impressions, events and items this test makes, removed afterwards (and the rollups redone)."""
    tag = f"webtest-{uuid.uuid4().hex[:6]}"
    yield tag
    pg.execute("DELETE FROM events WHERE event_id LIKE %s", (tag + "%",))
    pg.execute("DELETE FROM impressions WHERE request_id LIKE %s", (tag + "%",))
    pg.execute("DELETE FROM items WHERE sku LIKE %s", (tag.upper() + "%",))
    refresh(pg, world)


def _events(pg, rows: list[tuple]) -> None:
    partitions.ensure_for(pg, "events", [r[4] for r in rows])
    pg.cursor().executemany(
        "INSERT INTO events (event_id, type, user_id, sku, ts, price, quantity, order_id, surface, request_id, slot) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)


def test_traffic_rollup_attributes_events_by_request_id_per_surface_and_arm(world, pg, own_rows):
    tag = own_rows
    skus = [r[0] for r in pg.execute("SELECT sku FROM items ORDER BY sku LIMIT 3")]
    # within the hours a refresh recomputes (recent traffic), all in one hour
    at = (datetime.now(timezone.utc) - timedelta(hours=2)).replace(minute=10, second=0, microsecond=0)
    imp = lambda rid, arm, shown, ms: {"request_id": f"{tag}-{rid}", "ts": at.timestamp(), "surface": SURFACE,
                                       "user_id": "u1", "skus": shown, "sources": ["t"] * len(shown),
                                       "arm": arm, "latency_ms": ms}
    write_impressions(pg, [imp("a", "live", skus[:2], 10.0), imp("b", "live", skus[:1], 30.0),
                           imp("c", "canary", skus[2:], 20.0)])
    later = at + timedelta(minutes=5)
    _events(pg, [
        (f"{tag}-e1", "product_viewed", "u1", skus[0], later, 100, 1, None, SURFACE, f"{tag}-a", 0),
        (f"{tag}-e2", "product_viewed", "u1", skus[1], later, 100, 1, None, SURFACE, f"{tag}-a", 1),
        (f"{tag}-e3", "add_to_cart", "u1", skus[0], later, 100, 1, None, SURFACE, f"{tag}-a", 0),
        (f"{tag}-e4", "purchase_completed", "u1", skus[0], later, 100, 2, "o1", SURFACE, f"{tag}-a", 0),
        (f"{tag}-e5", "product_viewed", "u1", skus[2], later, 50, 1, None, SURFACE, f"{tag}-c", 0),
        (f"{tag}-e6", "product_viewed", "u1", skus[2], later, 50, 1, None, None, None, None),   # not from a rail
    ])
    first = refresh(pg, world)
    again = refresh(pg, world)   # recomputing the window changes nothing
    assert not first["skipped"] and not again["skipped"]
    rows = pg.execute("SELECT arm, requests, slots, clicked, carted, converted, revenue, latency_p50, latency_p95 "
                      "FROM rollup_traffic WHERE surface = %s ORDER BY arm", (SURFACE,)).fetchall()
    assert [r[:7] for r in rows] == [("canary", 1, 1, 1, 0, 0, 0), ("live", 2, 3, 1, 1, 1, 200)]
    assert rows[1][7] == pytest.approx(20.0) and rows[1][8] == pytest.approx(29.0)   # of 10 and 30 ms

    series = metrics.traffic(pg, 24 * 7, "surface")[SURFACE]
    assert len(series) == 1
    point = series[0]
    assert point["requests"] == 3 and point["ctr"] == pytest.approx(2 / 3)
    assert point["conversion"] == pytest.approx(1 / 3) and point["aov"] == pytest.approx(200.0)
    assert point["revenue_per_impression"] == pytest.approx(200 / 3)
    totals = metrics.totals(pg, 24 * 7)
    assert totals[f"surface:{SURFACE}"]["add_to_cart_rate"] == pytest.approx(1 / 3)


def test_backdated_traffic_counts_after_a_full_refresh_only(world, pg, own_rows):
    from recsys.cli import main
    from tests.conftest import TEST_OVERRIDES

    refresh(pg, world)   # the rollups are up to date: a refresh recomputes recent hours only
    at = datetime.now(timezone.utc) - timedelta(days=4)
    write_impressions(pg, [{"request_id": f"{own_rows}-old", "ts": at.timestamp(), "surface": SURFACE,
                            "skus": ["x"], "sources": ["t"], "arm": "live"}])
    count = "SELECT coalesce(sum(requests), 0) FROM rollup_traffic WHERE surface = %s"
    refresh(pg, world)
    assert pg.execute(count, (SURFACE,)).fetchone()[0] == 0
    assert main(["rollups", "--full", *TEST_OVERRIDES]) == 0
    assert pg.execute(count, (SURFACE,)).fetchone()[0] == 1


def test_zero_impression_skus_wait_72_hours_after_listing_and_filter(world, pg, own_rows):
    tag = own_rows.upper()
    now = datetime.now(timezone.utc)
    category, brand = "Webtest Gadgets", f"{tag}-brand"
    listed = {f"{tag}-OLD": now - timedelta(hours=100),          # flagged
              f"{tag}-EDGE": now - timedelta(hours=71, minutes=50),   # not yet 72 h
              f"{tag}-SHOWN": now - timedelta(hours=100)}        # shown: not flagged
    for sku, at in listed.items():
        pg.execute("INSERT INTO items (sku, title, category, brand, kind, price, margin, price_band, stock, listed_at) "
                   "VALUES (%s, %s, %s, %s, 'accessory', 19.99, 0.5, 2, 5, %s)", (sku, f"title {sku}", category, brand, at))
    write_impressions(pg, [{"request_id": f"{own_rows}-z", "ts": (now - timedelta(hours=1)).timestamp(),
                            "surface": SURFACE, "skus": [f"{tag}-SHOWN"], "sources": ["t"]}])
    refresh(pg, world)
    count, rows = metrics.zero_impression_skus(pg, 72, category=category)
    assert [r["sku"] for r in rows] == [f"{tag}-OLD"] and count == 1
    assert metrics.zero_impression_skus(pg, 72, brand=brand, price_band=2)[0] == 1
    assert metrics.zero_impression_skus(pg, 72, brand=brand, price_band=3)[0] == 0
    assert metrics.zero_impression_skus(pg, 60, brand=brand)[0] == 2   # a shorter wait flags the edge SKU too
    table = list(csv.DictReader(io.StringIO(metrics.zero_impression_csv(rows))))
    assert table[0]["sku"] == f"{tag}-OLD" and table[0]["brand"] == brand and table[0]["price_band"] == "2"


def test_catalog_health_counts_what_was_shown(world, pg, own_rows):
    refresh(pg, world)
    head = pg.execute("SELECT h.sku, i.kind IN ('accessory', 'part') AND i.margin >= 0.45 FROM rollup_head_skus h "
                      "JOIN items i USING (sku) LIMIT 1").fetchone()
    tail = pg.execute("SELECT sku FROM items i WHERE kind IN ('accessory', 'part') AND margin >= 0.45 AND NOT EXISTS "
                      "(SELECT 1 FROM rollup_head_skus h WHERE h.sku = i.sku) LIMIT 1").fetchone()
    assert head and tail

    def others() -> int:   # impressions other tests' recommenders write behind their responses
        return pg.execute("SELECT count(*) FROM impressions WHERE request_id NOT LIKE %s", (own_rows + "%",)).fetchone()[0]

    for attempt in range(3):   # measured again when another impression landed in between
        seen = others()
        refresh(pg, world)
        before = metrics.catalog_health(pg, 0.45)
        write_impressions(pg, [{"request_id": f"{own_rows}-h{attempt}", "surface": SURFACE,
                                "ts": (datetime.now(timezone.utc) - timedelta(minutes=5)).timestamp(),
                                "skus": [head[0]] * 2 + [tail[0]] * 8, "sources": ["t"] * 10}])
        refresh(pg, world)
        after = metrics.catalog_health(pg, 0.45)
        if others() == seen:
            break
    for window in ("24h", "7d"):
        b, a = before[window], after[window]
        assert a["slot_impressions"] == b["slot_impressions"] + 10
        assert 0 < a["coverage"] <= 1 and a["coverage"] == pytest.approx(a["skus_shown"] / a["catalog_skus"])
        # the ten slots moved the shares by exactly what they hold: 8 long-tail, high-margin accessory slots
        assert a["long_tail_share"] * a["slot_impressions"] == pytest.approx(b["long_tail_share"] * b["slot_impressions"] + 8)
        assert a["high_margin_accessory_share"] * a["slot_impressions"] == pytest.approx(
            b["high_margin_accessory_share"] * b["slot_impressions"] + 8 + (2 if head[1] else 0))
