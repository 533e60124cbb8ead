"""The HTTP contract (FastAPI): recommendations per surface, event intake, health. Served by Ray Serve."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

import orjson
import psycopg
from fastapi import Body, Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from recsys.auth import ROLES, ApiKey, create_key, list_keys, revoke_key
from recsys.auth.http import require_role
from recsys.features.events import PRINTABLE, IntakeLimits, Text, parse_event
from recsys.serve.admission import LoopLagAdmission
from recsys.serve.autoscaling import add_meter
from recsys.serve.limits import DEFAULT_MAX_BODY_BYTES, BodySizeLimit, sku_list
from recsys.serve.request import RecRequest

MAX_BATCH = 1000


# What each operation may answer, declared in the OpenAPI document (the fuzz test holds every answer to it).
class ErrorAnswer(BaseModel):
    """A refusal or failure: `detail` is a sentence, or a list of {loc, msg, type} naming bad fields."""
    detail: str | list[dict]


class RecommendedItem(BaseModel):
    sku: str
    score: float
    source: str
    reasons: list[str]
    explain: dict | None = None


class Recommendations(BaseModel):
    request_id: str
    surface: str
    model_version: str | None = Field(description="every model version that served the rail, joined by '+'")
    models: dict[str, str] = Field(default_factory=dict, description="kind -> version of what served the rail "
                                   "(two_tower, als, ranker, content)")
    arm: str = Field("live", description="live, or during a canary the user's arm: control or canary")
    rule_set_version: str | None = Field(description="the live merchandising rule set the rail was built under")
    items: list[RecommendedItem]
    degraded: list[str] = Field(description="stages or sources left out of this answer (a dead dependency, a budget)")
    rules: dict | None = Field(None, description="explain=true: what the rule set's rules did (blocked, inactive, "
                                                 "unmet, pins); each item's explain.rules says what they did to it")


class RejectedEvent(BaseModel):
    index: int
    reason: str


class EventsAnswer(BaseModel):
    accepted: int
    event_ids: list[str]
    rejected: list[RejectedEvent]


class EventsRefused(BaseModel):
    """Every event invalid (`accepted` 0, each reason in `rejected`), or a body that is no event at all (`detail`)."""
    accepted: int | None = None
    event_ids: list[str] | None = None
    rejected: list[RejectedEvent] | None = None
    detail: str | list[dict] | None = None


class EventsUnavailable(BaseModel):
    """Nothing was accepted: retry later (Retry-After) with the same event_ids."""
    detail: str
    event_ids: list[str] | None = None


_ERROR_TEXT = {400: "the body is not readable JSON, or its Content-Length is not a number",
               401: "no valid API key", 403: "the key's role may not do this", 404: "not found",
               413: "request body over serve.max_body_bytes", 422: "a parameter or the body breaks a rule",
               429: "over the key's rate limit (see Retry-After)",
               503: "a dependency is unavailable or the replica is starting (see Retry-After)"}


def _answers(*codes: int, **models) -> dict:
    """OpenAPI `responses` for these status codes: ErrorAnswer unless `models` names another (`_202=...`)."""
    return {code: {"model": models.get(f"_{code}", ErrorAnswer), "description": _ERROR_TEXT.get(code, "")}
            for code in codes}


api = FastAPI(
    title="recsys",
    version="0.1.0",
    description="Session-aware recommendations for homepage_hero, pdp_fbt and cart_upsell, and event intake.",
)


_recommender = None


def set_recommender(recommender) -> None:
    """Install the replica's Recommender (the Serve deployment does it; so do tests). A module global,
    because Serve runs its own copy of `api`, not the object this module holds."""
    global _recommender
    _recommender = recommender


def _max_body_bytes() -> int:
    return _recommender.max_body_bytes if _recommender is not None else DEFAULT_MAX_BODY_BYTES


api.add_middleware(BodySizeLimit, limit=_max_body_bytes)


def _admission() -> tuple[float, int] | None:
    return _recommender.admission if _recommender is not None else None


api.add_middleware(LoopLagAdmission, limits=_admission)   # it sheds before anything parses
# The autoscaling signal's meter (recsys/serve/autoscaling.py), outermost, on the app from its creation:
# Starlette refuses middleware once an app has served a request, and this module's `api` serves in many
# places (TestClient, schemathesis' from_asgi at a test module's import) before recsys.serve.app may be
# imported; a meter added there would then be missing and Serve would never scale (CI, `make test`).
add_meter(api)


@api.exception_handler(psycopg.OperationalError)
@api.exception_handler(PoolTimeout)
def _postgres_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """An endpoint that needs Postgres (the admin ones) while it is down: 503, never a 500."""
    retry = int(_recommender.cfg.auth.retry_after_s) if _recommender is not None else 5
    return JSONResponse({"detail": f"postgres unavailable ({type(exc).__name__}); retry"}, status_code=503,
                        headers={"Retry-After": str(retry)})


def recommender_of(request: Request):
    if _recommender is None:
        raise HTTPException(503, "replica is starting")
    return _recommender


def _resources(request: Request):
    return recommender_of(request).res


# Who may call what (recsys/auth): 401 without a valid key, 403 when its role is not enough.
storefront_key = require_role("storefront", _resources)
reader_key = require_role("storefront", _resources, public_when=lambda res: res.public_recommendations)
admin_key = require_role("admin", _resources)


def _include_rules_api() -> None:
    from fastapi.openapi.utils import get_openapi

    from recsys.serve.release_api import router as release_router
    from recsys.serve.rules_api import add_rule_set_schemas, router

    api.include_router(router)
    api.include_router(release_router)

    def openapi() -> dict:
        if api.openapi_schema is None:
            api.openapi_schema = add_rule_set_schemas(get_openapi(
                title=api.title, version=api.version, description=api.description, routes=api.routes))
        return api.openapi_schema

    api.openapi = openapi


_include_rules_api()


@api.get("/healthz", responses=_answers(503))
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


@api.get("/v1/recommendations/{surface}", dependencies=[Depends(reader_key)],
         responses={200: {"model": Recommendations}, 304: {"description": "not modified (If-None-Match)"},
                    **_answers(401, 403, 404, 422, 503)},
         description="Public unless `auth.public_recommendations` is false; then a storefront (or admin) key.")
async def recommendations(
    surface: str,
    request: Request,
    user_id: str | None = Query(None, min_length=1, max_length=128, pattern=PRINTABLE),
    session_id: str | None = Query(None, min_length=1, max_length=128, pattern=PRINTABLE),
    sku: str | None = Query(None, max_length=4096, pattern=PRINTABLE,
                            description="the SKU on the page (comma-separated for several)"),
    cart: str | None = Query(None, max_length=4096, pattern=PRINTABLE, description="comma-separated SKUs in the cart"),
    device: str | None = Query(None, max_length=32, pattern=PRINTABLE),
    geo: str | None = Query(None, max_length=16, pattern=PRINTABLE),
    k: int = Query(12, ge=1, le=50),
    explain: bool = False,
) -> Response:
    recommender = recommender_of(request)
    surfaces = recommender.surfaces   # plain dicts: OmegaConf lookups cost ~3% of a request here
    if surface not in surfaces:
        raise HTTPException(404, f"unknown surface {surface!r}; known: {', '.join(surfaces)}")
    most = recommender.max_context_skus
    req = RecRequest(surface=surface, user_id=user_id, session_id=session_id, skus=sku_list("sku", sku, most),
                     cart=sku_list("cart", cart, most),
                     device=device, geo=geo, k=k, explain=explain)
    needs = surfaces[surface]["needs"]
    if "sku" in needs and not req.skus:
        raise HTTPException(422, f"surface {surface} needs ?sku=")
    if "cart" in needs and not req.cart:
        raise HTTPException(422, f"surface {surface} needs ?cart=")
    # Fused: on the event loop, not a worker thread: the pipeline is in-memory work and one Redis round
    # trip (bounded by serve.redis_timeout_ms), and a thread hop per request cost more than it overlapped.
    # Split: the stages are remote calls the recommender waits on, which must not block the loop.
    body = await run_in_threadpool(recommender.recommend, req) if recommender.remote else recommender.recommend(req)
    etag = '"' + hashlib.sha1(orjson.dumps(
        [body["model_version"], body["rule_set_version"], [i["sku"] for i in body["items"]]])).hexdigest()[:16] + '"'
    cacheable = not body["degraded"] and not explain
    headers = {"ETag": etag,
               "Cache-Control": f"public, max-age={int(surfaces[surface]['cache_ttl_s'])}" if cacheable else "no-store"}
    if cacheable and request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json",
                    headers=headers)


@api.post("/v1/events", status_code=202, responses={202: {"model": EventsAnswer}, **_answers(
    400, 401, 403, 413, 422, 429, 503, _422=EventsRefused, _503=EventsUnavailable)})
def events(request: Request, payload: dict | list = Body(..., description="one event, or a list of events"),
           key: ApiKey = Depends(storefront_key)):
    """Validate, then produce to the events topic keyed by user_id; 202 once the broker acknowledged
    this request's events. Invalid events go to the dead-letter topic with their reason and are listed
    in `rejected`. Needs a storefront (or admin) key.

    - 429 with `Retry-After`: the key sent more events per second than `auth.events_per_s_per_key`
      allows (a batch counts each of its events).
    - 503 with `Retry-After`: the broker did not acknowledge within `features.intake.ack_timeout_s`;
      the answer lists the `event_ids`. Retry with the same `event_id`s: `event_id` is the
      idempotency key (the consumer applies an event_id once), so a retry never double-counts.
    """
    raw = payload if isinstance(payload, list) else [payload]
    if len(raw) > MAX_BATCH:
        raise HTTPException(413, f"at most {MAX_BATCH} events per request")
    res = recommender_of(request).res
    wait_s = res.event_rate_limiter().acquire(str(key.key_id), len(raw))
    if wait_s:
        raise HTTPException(429, f"over {res.cfg.auth.events_per_s_per_key} events/s for this key",
                            headers={"Retry-After": res.event_rate_limiter().retry_after(wait_s)})
    valid, rejected, limits = [], [], IntakeLimits.from_config(res.cfg)
    for index, item in enumerate(raw):
        event, reason = parse_event(item, limits)
        if event is None:
            rejected.append({"index": index, "reason": reason})
        else:
            valid.append(event)
    producer = res.event_producer()
    intake = res.cfg.features.intake
    try:
        if rejected:
            producer.send_dead_letters([{"reason": r["reason"], "payload": json.dumps(raw[r["index"]], default=str),
                                         "source": "api"} for r in rejected], timeout=float(intake.ack_timeout_s))
        if valid:
            producer.send_events(valid, timeout=float(intake.ack_timeout_s))
    except Exception as exc:  # DeliveryError, or a producer that cannot start
        return JSONResponse({"detail": f"event broker unavailable ({exc}); nothing was accepted: retry with the "
                                       "same event_ids", "event_ids": [e.event_id for e in valid]},
                            status_code=503, headers={"Retry-After": str(int(intake.retry_after_s))})
    status = 202 if valid or not rejected else 422
    return JSONResponse({"accepted": len(valid), "event_ids": [e.event_id for e in valid], "rejected": rejected},
                        status_code=status)


class NewKey(BaseModel):
    role: Literal[ROLES]
    name: Text(128) = ""   # printable and bounded, like every text that reaches a store


@api.get("/v1/admin/keys", dependencies=[Depends(admin_key)], responses=_answers(401, 403, 503))
def admin_list_keys(request: Request) -> list[dict]:
    """Every API key (never the key itself: its id, prefix, role, name, created and revoked times)."""
    with _resources(request).pool.connection() as conn:
        return [k.as_dict() for k in list_keys(conn)]


@api.post("/v1/admin/keys", status_code=201, dependencies=[Depends(admin_key)],
          responses=_answers(400, 401, 403, 413, 422, 503))
def admin_create_key(request: Request, new: NewKey) -> dict:
    """A new key; `key` is shown in this answer only (only its hash is stored)."""
    with _resources(request).pool.connection() as conn:
        record, key = create_key(conn, new.role, new.name)
    return {**record.as_dict(), "key": key}


@api.delete("/v1/admin/keys/{key_id_or_prefix}", dependencies=[Depends(admin_key)],
            responses=_answers(401, 403, 404, 422, 503))
def admin_revoke_key(request: Request,
                     key_id_or_prefix: str = Path(max_length=128, pattern=PRINTABLE)) -> dict:
    """Revoke a key by id or prefix; every replica stops accepting it within `auth.cache_ttl_s`."""
    res = _resources(request)
    try:
        with res.pool.connection() as conn:
            record = revoke_key(conn, key_id_or_prefix)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    res.key_verifier().forget()
    return record.as_dict()
