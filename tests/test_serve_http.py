"""The Ray Serve application over real HTTP, in both topologies, on a local Ray cluster of the test's
own: one Ray start for the module, the fused application first, then the split one in its place."""

import httpx
import pytest

from recsys.features.online_store import OnlineStore
from recsys.serve.cache import ResponseCache
from tests.conftest import PATIENT, make_cfg

SURFACE_PARAMS = {"homepage_hero": {}, "pdp_fbt": {"sku": None}, "cart_upsell": {"cart": None}}
SPLIT_DEPLOYMENTS = {"recsys_api", "stage_features", "stage_retrieval", "stage_ranker", "stage_slots"}


@pytest.fixture(scope="module")
def ray_serve(world):
    import ray
    from ray import serve

    from recsys.raycluster import ensure_ray

    ensure_ray(world)  # in-process, 2 CPUs (loading the world may have started it already)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": int(world.serve.port)},
                    logging_config={"log_level": "WARNING", "enable_access_log": False})
        yield f"http://127.0.0.1:{world.serve.port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module", params=["fused", "split"])
def served(request, ray_serve, world):
    from ray import serve

    from recsys.serve import app

    cfg = app.with_topology(make_cfg(*PATIENT), request.param)
    serve.run(app.build_app(cfg), name=cfg.serve.app_name, route_prefix="/")
    ResponseCache(OnlineStore.from_config(cfg), {}).clear()   # rails the other topology cached
    with httpx.Client(base_url=ray_serve, timeout=30) as client:
        yield client, request.param, serve.status().applications[cfg.serve.app_name].deployments


@pytest.fixture(scope="module")
def context(world):
    import psycopg

    from recsys.services import Postgres

    with psycopg.connect(Postgres(world).dsn) as pg:
        device = pg.execute("SELECT src_sku FROM item_edges ORDER BY src_sku LIMIT 1").fetchone()[0]
        user = pg.execute("SELECT user_id FROM events ORDER BY ts DESC LIMIT 1").fetchone()[0]
    return device, user


@pytest.fixture(scope="module")
def storefront(world):
    """Headers with a storefront key: POST /v1/events needs one."""
    import psycopg

    from recsys.auth import create_key
    from recsys.services import Postgres

    with psycopg.connect(Postgres(world).dsn, autocommit=True) as conn:
        return {"Authorization": f"Bearer {create_key(conn, 'storefront', 'test_serve_http')[1]}"}


def test_the_topology_is_the_configured_one(served):
    _, topology, deployments = served
    assert set(deployments) == (SPLIT_DEPLOYMENTS if topology == "split" else {"recsys_api"})


def test_the_http_front_is_this_clusters_haproxy(served, world):
    import psutil

    mine = f"recsys-haproxy-{world.services.ray.port}"
    assert any("haproxy" in " ".join(p.info["cmdline"] or []) and mine in " ".join(p.info["cmdline"] or [])
               for p in psutil.process_iter(["cmdline"]))


def test_every_surface_over_http(served, context):
    client, _, _ = served
    device, user = context
    assert client.get("/healthz").json()["status"] == "ok"
    for surface, extra in SURFACE_PARAMS.items():
        params = {"user_id": user, **{k: device for k in extra}}
        r = client.get(f"/v1/recommendations/{surface}", params=params)
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) == 12 and r.json()["degraded"] == []
        again = client.get(f"/v1/recommendations/{surface}", params=params)       # from the response cache
        assert again.json()["items"] == r.json()["items"] and again.json()["request_id"] != r.json()["request_id"]
        assert again.headers["etag"] == r.headers["etag"] and "max-age=90" in again.headers["cache-control"]
        explained = client.get(f"/v1/recommendations/{surface}", params={**params, "explain": True}).json()
        assert set(explained["stage_ms"]) == {"features", "retrieval", "ranker", "slots"}
        assert [i["explain"]["slot"] for i in explained["items"]] == list(range(1, 13))


def test_events_and_openapi(served, context, storefront):
    client, _, _ = served
    device, user = context
    event = {"type": "product_viewed", "user_id": user, "sku": device}
    assert client.post("/v1/events", json=event).status_code == 401
    r = client.post("/v1/events", json=event, headers=storefront)
    assert r.status_code == 202 and r.json()["accepted"] == 1
    assert "/v1/recommendations/{surface}" in client.get("/openapi.json").json()["paths"]

