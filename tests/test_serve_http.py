"""The Ray Serve application over real HTTP, on a local Ray cluster of the test's own."""

import httpx
import pytest

SURFACE_PARAMS = {"homepage_hero": {}, "pdp_fbt": {"sku": None}, "cart_upsell": {"cart": None}}


@pytest.fixture(scope="module")
def served(world):
    import ray
    from ray import serve

    from recsys.serve import app

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
             runtime_env={"env_vars": app.RAY_ENV})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": int(world.serve.port)},
                    logging_config={"log_level": "WARNING", "enable_access_log": False})
        serve.run(app.build_app(world), name=world.serve.app_name, route_prefix="/")
        yield f"http://127.0.0.1:{world.serve.port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_every_surface_over_http(served, pg):
    device = pg.execute("SELECT src_sku FROM item_edges ORDER BY src_sku LIMIT 1").fetchone()[0]
    user = pg.execute("SELECT user_id FROM events ORDER BY ts DESC LIMIT 1").fetchone()[0]
    with httpx.Client(base_url=served, timeout=30) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        for surface, extra in SURFACE_PARAMS.items():
            params = {"user_id": user, **{k: device for k in extra}}
            r = client.get(f"/v1/recommendations/{surface}", params=params)
            assert r.status_code == 200, r.text
            assert len(r.json()["items"]) == 12 and r.json()["degraded"] == []
        r = client.post("/v1/events", json={"type": "product_viewed", "user_id": user, "sku": device})
        assert r.status_code == 202 and r.json()["accepted"] == 1
        assert "/v1/recommendations/{surface}" in client.get("/openapi.json").json()["paths"]
