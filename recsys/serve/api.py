"""The HTTP contract (FastAPI): recommendations per surface, event intake, health. Served by Ray Serve."""

from __future__ import annotations

import hashlib
import json

import orjson
from fastapi import Body, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse

from recsys.features.events import parse_event
from recsys.serve.request import RecRequest

MAX_BATCH = 1000

api = FastAPI(
    title="recsys",
    version="0.1.0",
    description="Session-aware recommendations for homepage_hero, pdp_fbt and cart_upsell, and event intake.",
)


def _csv(value: str | None) -> list[str]:
    return [s for s in (value or "").split(",") if s]


_recommender = None


def set_recommender(recommender) -> None:
    """Install the replica's Recommender (the Serve deployment does it; so do tests). A module global,
    because Serve runs its own copy of `api`, not the object this module holds."""
    global _recommender
    _recommender = recommender


def recommender_of(request: Request):
    if _recommender is None:
        raise HTTPException(503, "replica is starting")
    return _recommender


@api.get("/healthz")
def healthz(request: Request) -> dict:
    res = recommender_of(request).res
    checks = {}
    try:
        checks["redis"] = bool(res.store.r.ping())
    except Exception:
        checks["redis"] = False
    try:
        with res.pool.connection(timeout=1) as conn:
            checks["postgres"] = conn.execute("SELECT 1").fetchone()[0] == 1
    except Exception:
        checks["postgres"] = False
    checks["catalog_items"] = 0 if res.catalog is None else len(res.catalog.items)
    checks["content_vectors"] = res.content[0] if res.content else None
    return {"status": "ok" if checks["redis"] and checks["postgres"] else "degraded", "checks": checks}


@api.get("/v1/recommendations/{surface}")
def recommendations(
    surface: str,
    request: Request,
    user_id: str | None = Query(None, max_length=128),
    session_id: str | None = Query(None, max_length=128),
    sku: str | None = Query(None, description="the SKU on the page (comma-separated for several)"),
    cart: str | None = Query(None, description="comma-separated SKUs in the cart"),
    device: str | None = Query(None, max_length=32),
    geo: str | None = Query(None, max_length=16),
    k: int = Query(12, ge=1, le=50),
    explain: bool = False,
) -> Response:
    recommender = recommender_of(request)
    cfg = recommender.cfg
    if surface not in cfg.surfaces:
        raise HTTPException(404, f"unknown surface {surface!r}; known: {', '.join(cfg.surfaces)}")
    req = RecRequest(surface=surface, user_id=user_id, session_id=session_id, skus=_csv(sku), cart=_csv(cart),
                     device=device, geo=geo, k=k, explain=explain)
    needs = cfg.surfaces[surface].needs
    if "sku" in needs and not req.skus:
        raise HTTPException(422, f"surface {surface} needs ?sku=")
    if "cart" in needs and not req.cart:
        raise HTTPException(422, f"surface {surface} needs ?cart=")
    body = recommender.recommend(req)
    etag = '"' + hashlib.sha1(orjson.dumps(
        [body["model_version"], body["rule_set_version"], [i["sku"] for i in body["items"]]])).hexdigest()[:16] + '"'
    cacheable = not body["degraded"] and not explain
    headers = {"ETag": etag,
               "Cache-Control": f"public, max-age={int(cfg.surfaces[surface].cache_ttl_s)}" if cacheable else "no-store"}
    if cacheable and request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json",
                    headers=headers)


@api.post("/v1/events", status_code=202)
def events(request: Request, payload: dict | list = Body(..., description="one event, or a list of events")):
    """Validate, then produce to the events topic keyed by user_id; 202 once the broker acknowledged.
    Invalid events go to the dead-letter topic with their reason and are listed in `rejected`."""
    raw = payload if isinstance(payload, list) else [payload]
    if len(raw) > MAX_BATCH:
        raise HTTPException(413, f"at most {MAX_BATCH} events per request")
    valid, rejected = [], []
    for index, item in enumerate(raw):
        event, reason = parse_event(item)
        if event is None:
            rejected.append({"index": index, "reason": reason})
        else:
            valid.append(event)
    producer = recommender_of(request).res.event_producer()
    try:
        if rejected:
            producer.send_dead_letters([{"reason": r["reason"], "payload": json.dumps(raw[r["index"]], default=str),
                                         "source": "api"} for r in rejected])
        if valid:
            producer.send_events(valid)
    except Exception as exc:
        raise HTTPException(503, f"event broker unavailable ({exc}); nothing was accepted, retry") from exc
    status = 202 if valid or not rejected else 422
    return JSONResponse({"accepted": len(valid), "event_ids": [e.event_id for e in valid], "rejected": rejected},
                        status_code=status)
