"""A minimal store to click through: a home page with `homepage_hero`, a product page with `pdp_fbt`,
a cart with `cart_upsell`. Viewing, adding to cart and buying send the real events through
`POST /v1/events` with the storefront key (server side: the key never reaches the browser), with the
rail's request id and slot when the click came from a rail, so the canary and the dashboard attribute
them. The shopper is a cookie (`shopper`), the cart another; nothing else is stored here."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from recsys.web.catalog_cards import cards, items_by_sku
from recsys.web.serve_client import ServeUnavailable

router = APIRouter()
SHOPPER, SESSION, CART = "shopper", "store_session", "cart"
MAX_CART = 20


def storefront_key(cfg) -> str | None:
    """`web.storefront_key` (RECSYS_STOREFRONT_KEY), else the demo's storefront key in <state_dir>/api-keys.json."""
    if cfg.web.storefront_key:
        return str(cfg.web.storefront_key)
    try:
        return json.loads(Path(cfg.state_dir, "api-keys.json").read_text()).get("storefront")
    except (OSError, ValueError):
        return None


def _who(request: Request) -> tuple[str, str, list[str]]:
    shopper = request.cookies.get(SHOPPER) or f"web-{uuid.uuid4().hex[:10]}"
    session = request.cookies.get(SESSION) or f"ws-{uuid.uuid4().hex[:10]}"
    cart = [s for s in (request.cookies.get(CART) or "").split(",") if s][:MAX_CART]
    return shopper, session, cart


def _keep(response: Response, shopper: str, session: str, cart: list[str] | None = None) -> Response:
    response.set_cookie(SHOPPER, shopper, max_age=365 * 86400, samesite="lax", httponly=True)
    response.set_cookie(SESSION, session, samesite="lax", httponly=True)   # ends with the browser session
    if cart is not None:
        response.set_cookie(CART, ",".join(cart[:MAX_CART]), samesite="lax", httponly=True)
    return response


def _send(request: Request, events: list[dict]) -> str | None:
    """POST the events to the API with the storefront key; None when accepted, else why not (the page
    still renders: a shopper is never stopped by the event pipeline)."""
    key = storefront_key(request.app.state.cfg)
    if key is None:
        return "no storefront key: set RECSYS_STOREFRONT_KEY or run make demo"
    try:
        answer = request.app.state.serve.call("POST", "/v1/events", key, json=events)
    except ServeUnavailable as exc:
        return str(exc)
    return None if answer.status_code == 202 else f"events: {answer.status_code} {answer.text[:200]}"


def _event(kind: str, shopper: str, session: str, sku: str, price, context: dict | None = None, **more) -> dict:
    event = {"event_id": uuid.uuid4().hex, "type": kind, "user_id": shopper, "session_id": session, "sku": sku,
             "ts": datetime.now(timezone.utc).isoformat(), "device": "desktop",
             "price": float(price) if price is not None else None, **more}
    if context and context.get("request_id"):
        event["context"] = context
    return {k: v for k, v in event.items() if v is not None}


def _context(surface: str | None, rid: str | None, slot: str | int | None) -> dict | None:
    if not rid:
        return None
    return {"surface": surface or None, "request_id": rid[:64], "slot": int(slot) if str(slot or "").isdigit() else None}


def _rail(request: Request, conn, surface: str, params: dict) -> dict:
    try:
        body = request.app.state.serve.rail(surface, params)
    except ServeUnavailable as exc:
        return {"error": str(exc), "cards": []}
    return {"cards": cards(conn, request.app.state.cfg, body["items"]),
            "request_id": body["request_id"], "surface": surface, "model_version": body.get("model_version")}


def _recent(conn, shopper: str) -> list[dict]:
    """The shopper's last events as the offline log holds them (they arrive through the consumer)."""
    rows = conn.execute("SELECT e.type, e.sku, i.title, e.ts FROM events e LEFT JOIN items i USING (sku) "
                        "WHERE e.user_id = %s ORDER BY e.ts DESC LIMIT 6", (shopper,)).fetchall()
    return [{"type": t, "sku": s, "title": title, "ts": ts} for t, s, title, ts in rows]


def _render(request: Request, name: str, shopper: str, session: str, cart: list[str], **context) -> Response:
    response = request.app.state.templates.TemplateResponse(
        request, name, {"shopper": shopper, "cart_count": len(cart), "store": True, **context})
    return _keep(response, shopper, session, cart)


@router.get("/store")
def home(request: Request, ordered: str | None = None):
    shopper, session, cart = _who(request)
    with request.app.state.pool.connection() as conn:
        rail = _rail(request, conn, "homepage_hero", {"user_id": shopper, "session_id": session, "device": "desktop"})
        recent = _recent(conn, shopper)
    return _render(request, "store_home.html", shopper, session, cart, rail=rail, recent=recent, ordered=ordered)


@router.get("/store/p/{sku}")
def product(request: Request, sku: str, surface: str | None = None, rid: str | None = None, slot: str | None = None):
    shopper, session, cart = _who(request)
    with request.app.state.pool.connection() as conn:
        item = items_by_sku(conn, [sku]).get(sku)
        if item is None:
            raise HTTPException(404, f"no product {sku!r}")
        sent = _send(request, [_event("product_viewed", shopper, session, sku, item["price"],
                                      _context(surface, rid, slot))])
        rail = _rail(request, conn, "pdp_fbt", {"user_id": shopper, "session_id": session, "sku": sku,
                                                "device": "desktop"})
    return _render(request, "store_product.html", shopper, session, cart, item=item, rail=rail, sent=sent,
                   context={"surface": surface or "", "rid": rid or "", "slot": slot or ""})


@router.post("/store/cart")
def add_to_cart(request: Request, sku: str = Form(..., max_length=64), surface: str = Form(""),
                rid: str = Form(""), slot: str = Form("")):
    shopper, session, cart = _who(request)
    with request.app.state.pool.connection() as conn:
        item = items_by_sku(conn, [sku]).get(sku)
    if item is None:
        raise HTTPException(404, f"no product {sku!r}")
    sent = _send(request, [_event("add_to_cart", shopper, session, sku, item["price"], _context(surface, rid, slot))])
    cart = ([s for s in cart if s != sku] + [sku])[-MAX_CART:]
    url = "/store/cart" + ("?error=" + sent[:200] if sent else "")
    return _keep(RedirectResponse(url, status_code=303), shopper, session, cart)


@router.get("/store/cart")
def show_cart(request: Request, error: str | None = None):
    shopper, session, cart = _who(request)
    with request.app.state.pool.connection() as conn:
        known = items_by_sku(conn, cart)
        lines = [known[s] for s in cart if s in known]
        rail = _rail(request, conn, "cart_upsell", {"user_id": shopper, "session_id": session,
                                                    "cart": ",".join(cart), "device": "desktop"}) if cart else None
    total = sum(float(i["price"] or 0) for i in lines)
    return _render(request, "store_cart.html", shopper, session, cart, lines=lines, rail=rail, total=total,
                   error=error)


@router.post("/store/checkout")
def checkout(request: Request):
    shopper, session, cart = _who(request)
    if not cart:
        return RedirectResponse("/store/cart", status_code=303)
    with request.app.state.pool.connection() as conn:
        known = items_by_sku(conn, cart)
    order_id = f"o-{uuid.uuid4().hex[:12]}"
    sent = _send(request, [_event("purchase_completed", shopper, session, s, known[s]["price"], order_id=order_id)
                           for s in cart if s in known])
    if sent:
        return _keep(RedirectResponse("/store/cart?error=" + sent[:200], status_code=303), shopper, session, cart)
    return _keep(RedirectResponse(f"/store?ordered={order_id}", status_code=303), shopper, session, [])
