"""The HTTP contract on the small world, in-process (the Serve deployment runs the same FastAPI app)."""

import time
import uuid

import pytest
from fastapi.testclient import TestClient

from recsys.serve.api import api, set_recommender
from recsys.serve.recommender import Recommender
from tests.conftest import PATIENT, make_cfg

SURFACES = ("homepage_hero", "pdp_fbt", "cart_upsell")


@pytest.fixture(scope="module")
def client(world):
    set_recommender(Recommender(make_cfg(*PATIENT)))
    with TestClient(api) as c:
        yield c


@pytest.fixture(scope="module")
def storefront(world):
    """Headers with a storefront key: POST /v1/events needs one."""
    import psycopg

    from recsys.auth import create_key
    from recsys.services import Postgres

    with psycopg.connect(Postgres(world).dsn, autocommit=True) as conn:
        return {"Authorization": f"Bearer {create_key(conn, 'storefront', 'test_api')[1]}"}


@pytest.fixture(scope="module")
def shopper(world):
    """A user from the history who bought something, with a device that has accessories."""
    from recsys.services import Postgres
    import psycopg

    with psycopg.connect(Postgres(world).dsn) as conn:
        user, bought = conn.execute(
            "SELECT user_id, sku FROM events WHERE type = 'purchase_completed' ORDER BY ts DESC LIMIT 1").fetchone()
        device = conn.execute("SELECT src_sku FROM item_edges GROUP BY src_sku HAVING count(*) >= 15 "
                              "ORDER BY src_sku LIMIT 1").fetchone()[0]
        accessories = {r[0] for r in conn.execute("SELECT dst_sku FROM item_edges WHERE src_sku = %s", (device,))}
    return {"user": user, "bought": bought, "device": device, "accessories": accessories}


def params(surface, shopper, user=None):
    p = {"user_id": user or shopper["user"]}
    if surface == "pdp_fbt":
        p["sku"] = shopper["device"]
    if surface == "cart_upsell":
        p["cart"] = shopper["device"]
    return p


@pytest.mark.parametrize("surface", SURFACES)
def test_each_surface_fills_twelve_slots_in_the_contract_shape(client, shopper, surface):
    r = client.get(f"/v1/recommendations/{surface}", params=params(surface, shopper))
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"request_id", "surface", "model_version", "models", "arm", "rule_set_version", "items",
                         "degraded"}
    assert body["surface"] == surface and body["degraded"] == []
    # what served the rail: every live version (content vectors included) and the arm (no canary: live)
    assert body["models"]["content"] == "content-minilm-v1" and body["arm"] == "live"
    assert body["model_version"] == "+".join(body["models"][k] for k in sorted(body["models"]))
    skus = [i["sku"] for i in body["items"]]
    assert len(skus) == 12 == len(set(skus))
    assert all(set(i) == {"sku", "score", "source", "reasons"} for i in body["items"])
    assert shopper["bought"] not in skus                       # just bought: excluded
    assert "max-age=90" in r.headers["cache-control"] and r.headers["etag"]


def test_product_page_shows_what_fits_the_product(client, shopper):
    body = client.get("/v1/recommendations/pdp_fbt", params=params("pdp_fbt", shopper)).json()
    skus = [i["sku"] for i in body["items"]]
    assert shopper["device"] not in skus
    assert len(set(skus) & shopper["accessories"]) >= 6
    assert body["items"][0]["source"] == "accessories"


def test_cart_upsell_never_offers_the_cart(client, shopper):
    body = client.get("/v1/recommendations/cart_upsell", params=params("cart_upsell", shopper)).json()
    assert shopper["device"] not in [i["sku"] for i in body["items"]]


def test_unknown_user_and_unknown_sku_fall_back_cleanly(client, shopper):
    for surface in SURFACES:
        p = params(surface, shopper, user=f"never-seen-{uuid.uuid4().hex}")
        if surface != "homepage_hero":
            p["sku" if surface == "pdp_fbt" else "cart"] = "NO-SUCH-SKU"
        r = client.get(f"/v1/recommendations/{surface}", params=p)
        assert r.status_code == 200
        assert len(r.json()["items"]) == 12 and r.json()["degraded"] == []


def test_explain_etag_and_bad_requests(client, shopper):
    r = client.get("/v1/recommendations/homepage_hero", params={**params("homepage_hero", shopper), "explain": True})
    assert "contributions" in r.json()["items"][0]["explain"] and r.headers["cache-control"] == "no-store"
    first = client.get("/v1/recommendations/homepage_hero", params={"user_id": "etag-user"})
    again = client.get("/v1/recommendations/homepage_hero", params={"user_id": "etag-user"},
                       headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert client.get("/v1/recommendations/nowhere").status_code == 404
    assert "needs ?sku=" in client.get("/v1/recommendations/pdp_fbt").json()["detail"]
    assert client.get("/v1/recommendations/homepage_hero", params={"k": 0}).status_code == 422
    assert client.get("/openapi.json").json()["info"]["title"] == "recsys"


def test_events_are_acknowledged_and_bad_ones_explained(client, shopper, storefront):
    good = {"type": "product_viewed", "user_id": "api-user", "sku": shopper["device"]}
    r = client.post("/v1/events", json=good, headers=storefront)
    assert r.status_code == 202 and r.json()["accepted"] == 1 and len(r.json()["event_ids"]) == 1
    r = client.post("/v1/events", json=[good, {"type": "nope", "user_id": "x", "sku": "y"}], headers=storefront)
    assert r.status_code == 202 and r.json()["accepted"] == 1
    assert r.json()["rejected"][0]["index"] == 1 and "type:" in r.json()["rejected"][0]["reason"]
    r = client.post("/v1/events", json={"user_id": "x"}, headers=storefront)
    assert r.status_code == 422 and r.json()["accepted"] == 0
    assert client.get("/healthz").json()["status"] == "ok"


def test_dead_redis_and_dead_postgres_degrade_instead_of_failing(world, shopper):
    # Redis dead: the features stage fails and its fallback (an anonymous user) stands in. Postgres dead
    # after start: serving reads only its in-memory snapshots per request, so nothing is degraded.
    for broken, expect in (("services.redis.url=redis://127.0.0.1:1/0", "features"),
                           ("services.postgres.dsn=postgresql://postgres@127.0.0.1:1/none", None)):
        cfg = make_cfg(broken, "surfaces.homepage_hero.cache_ttl_s=0", *PATIENT)  # no cached rail answers first
        healthy = Recommender(world)
        recommender = Recommender(cfg)
        if "postgres" in broken:  # keep the snapshots a replica loaded before Postgres died
            recommender.res.catalog, recommender.res.bestsellers = healthy.res.catalog, healthy.res.bestsellers
            recommender.res.content, recommender.res.content_vectors = healthy.res.content, healthy.res.content_vectors
            recommender.res.content_index = healthy.res.content_index
        set_recommender(recommender)
        with TestClient(api) as c:
            start = time.monotonic()
            r = c.get("/v1/recommendations/homepage_hero", params={"user_id": shopper["user"]})
            assert time.monotonic() - start < 5
            assert r.status_code == 200, r.text
            body = r.json()
            assert len(body["items"]) == 12
            if expect is None:
                assert body["degraded"] == [] and "content_session" in {i["source"] for i in body["items"]}
            else:
                assert any(d.startswith(expect) for d in body["degraded"]), body["degraded"]
                assert r.headers["cache-control"] == "no-store"
            assert c.get("/healthz").json()["status"] == "degraded"
    set_recommender(Recommender(make_cfg(*PATIENT)))


def test_a_known_shopper_gets_items_like_their_recent_views(client, shopper):
    body = client.get("/v1/recommendations/homepage_hero",
                      params={"user_id": shopper["user"], "explain": True}).json()
    contributing = {name for item in body["items"] for name in item["explain"]["contributions"]}
    assert "content_session" in contributing and body["user_known"] is True
    cold = client.get("/v1/recommendations/homepage_hero", params={"user_id": "nobody", "explain": True}).json()
    assert "content_session" not in {n for i in cold["items"] for n in i["explain"]["contributions"]}
