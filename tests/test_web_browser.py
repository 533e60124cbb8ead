"""The dashboard and the storefront in a real browser: headless Chromium (Debian's `chromium`) driven by
Playwright, against the web process (recsys/web) in front of the Serve application, the feature consumer,
Postgres, Redis and the broker. Signing in with each role, the catalog-health table with a known
zero-impression SKU, a rule with an error and then a valid one published and seen in the live preview,
the models page, charts drawn from the bundled Plotly with no request leaving the machine, and a shopper
whose home rail changes after an add-to-cart. Each page's screenshot goes to $RECSYS_SCREENSHOTS (or the
suite's state dir); the best are kept in docs/screenshots/."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import pytest

from recsys.auth import create_key
from recsys.services import Postgres
from recsys.web.dashboard import EXPERIMENT_PLOTS
from tests.conftest import PATIENT, STATE, free_port, make_cfg

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium; .ci/run does)")
SHOTS = Path(os.environ.get("RECSYS_SCREENSHOTS", Path(STATE) / "screenshots"))
RAIL_CHANGES_WITHIN_S = 15.0
PUBLISH_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def keys(world):
    with psycopg.connect(Postgres(world).dsn, autocommit=True) as conn:
        return {role: create_key(conn, role, "test_web_browser")[1]
                for role in ("viewer", "merchandiser", "ml", "storefront")}


@pytest.fixture(scope="module")
def site(world, keys):
    """Serve (fused), a feature consumer and the web process; the web's base URL."""
    import ray
    import uvicorn
    from ray import serve

    from recsys.features.consumer import run_consumer
    from recsys.raycluster import ensure_ray
    from recsys.serve import app
    from recsys.web.app import create_app

    ensure_ray(world)
    web_port = free_port()
    cfg = app.with_topology(make_cfg(*PATIENT, "rules.poll_s=0.5", f"web.port={web_port}",
                                     f"web.storefront_key={keys['storefront']}"), "fused")
    stop = threading.Event()
    consumer = threading.Thread(target=run_consumer, args=(cfg,), kwargs={"stop": stop.is_set}, daemon=True)
    server = uvicorn.Server(uvicorn.Config(create_app(cfg), host="127.0.0.1", port=web_port, log_level="warning"))
    web = threading.Thread(target=server.run, daemon=True)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": int(cfg.serve.port)},
                    logging_config={"log_level": "WARNING", "enable_access_log": False})
        serve.run(app.build_app(cfg), name=cfg.serve.app_name, route_prefix="/")
        consumer.start()
        web.start()
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.started
        yield f"http://127.0.0.1:{web_port}", cfg
    finally:
        server.should_exit = True
        stop.set()
        web.join(10)
        consumer.join(20)
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, site):
    """A fresh browser context (no cookies) whose requests are all checked to stay on this machine."""
    base, _ = site
    context = browser.new_context(base_url=base, viewport={"width": 1360, "height": 900})
    leaving = []

    def only_local(route):
        host = urlparse(route.request.url).hostname
        if host not in ("127.0.0.1", "localhost"):
            leaving.append(route.request.url)
            return route.abort()
        return route.continue_()

    context.route("**/*", only_local)
    page = context.new_page()
    yield page
    context.close()
    assert not leaving, f"requests left the machine (a CDN?): {leaving}"


def sign_in(page, key: str) -> None:
    page.goto("/login")
    page.fill("#key", key)
    page.click("#sign-in")
    page.wait_for_load_state()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_signing_in_takes_a_dashboard_role_and_refuses_others(page, keys):
    page.goto("/dashboard")
    assert page.url.endswith("/login?reason=sign in with an API key") or "/login" in page.url
    sign_in(page, "rk_viewer_not-a-real-key")
    assert page.locator("#login-error").is_visible()
    sign_in(page, keys["storefront"])   # a storefront key is not for people
    assert "/login" in page.url and page.locator("#login-error").is_visible()
    shot(page, "login")
    sign_in(page, keys["viewer"])
    assert page.url.endswith("/dashboard") and page.locator("#role").inner_text() == "viewer"
    page.goto("/dashboard/rules")
    assert page.locator("#save-draft").count() == 0 and page.locator("button.publish").count() == 0
    # and by hand, through the dashboard's API: the Serve API refuses the viewer's key
    answer = page.evaluate("""async () => {
        const r = await fetch('/dashboard/api/admin/rules', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                              body: JSON.stringify({rules: []})});
        return r.status; }""")
    assert answer == 403
    page.goto("/logout")
    page.goto("/dashboard/models")
    assert "/login" in page.url


def test_overview_draws_its_charts_from_the_bundled_plotly(page, keys, site):
    sign_in(page, keys["viewer"])
    page.goto("/dashboard")
    page.wait_for_selector("#chart-ctr-arm .main-svg", timeout=15000)
    assert page.locator(".chart").count() == 14   # six metrics by surface and by arm, latency, events
    page.wait_for_function("document.querySelectorAll('.chart .main-svg').length >= 14")
    assert page.locator("#totals").is_visible()
    shot(page, "dashboard-overview")


def test_catalog_health_lists_a_known_zero_impression_sku_and_exports_it(page, keys, site, world):
    from recsys.web.rollups import refresh

    sku, category = f"WEBZERO-{uuid.uuid4().hex[:6].upper()}", "Webtest Zero"
    dsn = Postgres(world).dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO items (sku, title, category, brand, kind, price, margin, price_band, stock, listed_at) "
                     "VALUES (%s, 'Never shown cable', %s, 'Webtest', 'accessory', 9.99, 0.5, 1, 3, %s)",
                     (sku, category, datetime.now(timezone.utc) - timedelta(hours=100)))
        refresh(conn, site[1])
    try:
        sign_in(page, keys["viewer"])
        page.goto("/dashboard/catalog")
        assert page.locator("#health tr").count() == 3   # header, 24 h, 7 d
        page.select_option("select[name=category]", category)
        page.click("#zero-filters button[type=submit]")
        page.wait_for_load_state()
        assert page.locator("#zero-count").inner_text() == "1"
        assert sku in page.locator("#zero-table").inner_text()
        shot(page, "dashboard-catalog-health")
        with page.expect_download() as download:
            page.click("#csv")
        text = Path(download.value.path()).read_text()
        assert text.splitlines()[0].startswith("sku,title,category") and sku in text
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM items WHERE sku = %s", (sku,))


def test_a_rule_with_an_error_is_shown_at_its_path_and_a_valid_one_published_changes_the_live_preview(
        page, keys, site, no_live_rules):
    sign_in(page, keys["merchandiser"])
    page.goto("/dashboard/preview")
    page.wait_for_selector("#surface-homepage_hero .card")
    shown = page.locator("#surface-homepage_hero .card").evaluate_all("cs => cs.map(c => c.dataset.sku)")
    first, pinned = shown[0], shown[-1]   # a candidate of the rail, moved from the last slot to the first
    assert pinned != first

    page.goto("/dashboard/rules")
    bad = {"name": "webtest", "rules": [{"id": "pin-1", "kind": "pin", "label": "webtest pin",
                                         "surfaces": ["homepage_hero"], "sku": pinned, "slot": "first"}]}
    page.fill("#rule-json", json.dumps(bad, indent=2))
    page.click("#validate")
    page.locator("#rule-errors li").first.wait_for()
    errors = page.locator("#rule-errors li").evaluate_all("es => es.map(e => [e.dataset.path, e.textContent])")
    assert [path for path, _ in errors] == ["$.rules[0].slot"], errors
    shot(page, "dashboard-rules-error")

    good = {"name": "webtest", "rules": [{"id": "pin-1", "kind": "pin", "label": "webtest pin",
                                          "surfaces": ["homepage_hero"], "sku": pinned, "slot": 1}]}
    page.fill("#rule-json", json.dumps(good, indent=2))
    page.click("#validate")
    page.wait_for_function("document.getElementById('rule-status').textContent.startsWith('valid')")
    page.click("#preview")   # live beside the draft, from the same candidates
    page.wait_for_selector("#preview-draft .card")
    assert page.locator("#preview-draft .card").first.get_attribute("data-sku") == pinned
    assert page.locator("#preview-live .card").first.get_attribute("data-sku") != pinned
    shot(page, "dashboard-rules-preview")
    page.click("#save-draft")
    page.wait_for_function("document.getElementById('rule-status').dataset.version")
    version = page.locator("#rule-status").get_attribute("data-version")
    page.wait_for_selector(f"#rule-sets tr[data-version='{version}'][data-state=draft] button.publish")   # reloaded
    page.click(f"#rule-sets tr[data-version='{version}'] button.publish")
    page.wait_for_selector(f"#rule-sets tr[data-version='{version}'][data-state=live]")
    published = time.monotonic()
    assert "publish" in page.locator("#audit").inner_text()

    while True:   # the live preview asks Serve; replicas apply a publish within rules.poll_s
        page.goto("/dashboard/preview")
        card = page.locator("#surface-homepage_hero .card").first
        if card.get_attribute("data-sku") == pinned or time.monotonic() - published > PUBLISH_WITHIN_S:
            break
        time.sleep(0.5)
    assert card.get_attribute("data-sku") == pinned
    # the slot's explanation names the pin (as the rail's source when the pin drew it in, or beside the
    # candidate's own source when it moved a candidate up)
    assert "pin-1: pinned at slot 1" in card.inner_text()
    shot(page, "dashboard-live-preview")


def test_models_page_shows_the_registry_and_the_canary_and_only_ml_may_act(page, keys, world):
    with psycopg.connect(Postgres(world).dsn) as conn:
        models = conn.execute("SELECT count(*) FROM models").fetchone()[0]
    sign_in(page, keys["ml"])
    page.goto("/dashboard/models")
    assert page.locator("#registry tr").count() == models + 1
    assert page.locator("#canary-state").is_visible()
    shot(page, "dashboard-models")
    page.goto("/logout")
    sign_in(page, keys["viewer"])
    page.goto("/dashboard/models")
    assert page.locator("#registry button").count() == 0 and page.locator("#advance").count() == 0


def test_experiments_page_shows_the_simulated_ab_test(page, keys, site):
    sign_in(page, keys["viewer"])
    page.goto("/dashboard/experiments")
    result = json.loads((Path(site[1].web.experiments_dir) / "sim-ab.json").read_text())   # docs/, committed
    rows = page.locator("#lifts tr").count() - 1
    assert rows == sum(len(arms) for arms in result["lifts"].values())
    assert "personalized" in page.locator("#arm-means").inner_text()
    assert page.locator("img").count() == sum((Path(site[1].web.experiments_dir) / n).exists() for n in EXPERIMENT_PLOTS) >= 2
    assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    shot(page, "dashboard-experiments")


def _hero(page) -> list[str]:
    return page.locator("#hero .card").evaluate_all("cs => cs.map(c => c.dataset.sku)")


def test_a_shopper_clicks_through_the_store_and_the_home_rail_follows(page, site, world):
    page.goto("/store")
    shot(page, "store-home")
    before = _hero(page)
    assert len(before) == 12, page.locator("main").inner_text()
    page.goto("/store")
    assert _hero(page) == before   # the same shopper, nothing done: the same rail
    page.locator("#hero .card a.title").first.click()   # a click from the rail: attributed to it
    page.wait_for_selector("#product")
    viewed = page.locator("#product").get_attribute("data-sku")
    assert viewed == before[0] and page.locator("#fbt .card").count() > 0
    shot(page, "store-product")
    page.click("#add-to-cart")
    page.wait_for_selector("#cart-lines")
    assert viewed in page.locator("#cart-lines").inner_text() and page.locator("#upsell .card").count() > 0
    shot(page, "store-cart")
    added = time.monotonic()
    while True:
        page.goto("/store")
        after = _hero(page)
        if after != before or time.monotonic() - added > RAIL_CHANGES_WITHIN_S:
            break
        time.sleep(0.5)
    print(f"\n  home rail changed {time.monotonic() - added:.1f} s after the add-to-cart")
    assert after != before
    page.goto("/store/cart")
    page.click("#buy")
    page.wait_for_selector("#ordered")
    shopper = next(c["value"] for c in page.context.cookies() if c["name"] == "shopper")
    with psycopg.connect(Postgres(world).dsn) as conn:
        deadline = time.monotonic() + 15
        while True:   # through the API, the broker and the consumer into the event log
            rows = conn.execute("SELECT type, sku, request_id, surface FROM events WHERE user_id = %s ORDER BY ts",
                                (shopper,)).fetchall()
            if len(rows) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    types = [r[0] for r in rows]
    assert types[:3] == ["product_viewed", "add_to_cart", "purchase_completed"], rows
    assert rows[0][1] == viewed and rows[0][3] == "homepage_hero" and rows[0][2]   # attributed to the rail
    assert rows[1][2] == rows[0][2]   # the add-to-cart came from the same rail's product
