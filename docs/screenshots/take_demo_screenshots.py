"""Screenshots of the dashboard and the store of a running `make demo` (docs/dashboard.md):

    .venv/bin/python docs/screenshots/take_demo_screenshots.py docs/screenshots [.recsys/api-keys.json]

The browser test (tests/test_web_browser.py) writes its own to $RECSYS_SCREENSHOTS."""

import json
import sys

from playwright.sync_api import sync_playwright

BASE = "http://127.0.0.1:8300"
VIEW = {"width": 1360, "height": 900}


def main(out: str, keys_file: str = ".recsys/api-keys.json") -> None:
    keys = json.load(open(keys_file))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"])
        page = browser.new_context(base_url=BASE, viewport=VIEW).new_page()
        page.goto("/login")
        page.fill("#key", keys["ml"])
        page.click("#sign-in")
        page.wait_for_function("document.querySelectorAll('.chart .main-svg').length >= 14")
        page.screenshot(path=f"{out}/dashboard-overview.png", full_page=True)
        for name, path in (("catalog-health", "/dashboard/catalog"), ("models", "/dashboard/models"),
                           ("rules", "/dashboard/rules")):
            page.goto(path)
            page.screenshot(path=f"{out}/dashboard-{name}.png")
        page.goto("/dashboard/preview?user_id=u008530&sku=E000002&cart=E000002")
        page.screenshot(path=f"{out}/dashboard-live-preview.png", full_page=True)

        store = browser.new_context(base_url=BASE, viewport=VIEW).new_page()   # a new shopper
        store.goto("/store")
        store.screenshot(path=f"{out}/store-home.png", full_page=True)
        store.locator("#hero .card a.title").first.click()
        store.wait_for_selector("#product")
        store.screenshot(path=f"{out}/store-product.png", full_page=True)
        store.click("#add-to-cart")
        store.wait_for_selector("#cart-lines")
        store.screenshot(path=f"{out}/store-cart.png", full_page=True)
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
