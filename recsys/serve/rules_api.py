"""The merchandising admin API, `/v1/admin/rules`: validate, create, preview, shadow, publish, roll back,
archive, list, read, audit. Needs a merchandiser (or admin) key; every change is audited under the
key's identity. Serving picks up a publish or a rollback by polling (recsys/rules/rulebook.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from recsys.auth import ApiKey
from recsys.auth.http import require_role
from recsys.auth.roles import READERS
from recsys.features.events import PRINTABLE
from recsys.rules import shadow as shadow_runs
from recsys.rules import store
from recsys.rules.schema import RuleSet, json_schema, validate
from recsys.serve.limits import sku_list
from recsys.serve.request import RecRequest

router = APIRouter(prefix="/v1/admin/rules", tags=["merchandising rules"])


def _recommender(request: Request):
    from recsys.serve.api import recommender_of

    return recommender_of(request)


merchandiser_key = require_role("merchandiser", lambda request: _recommender(request).res)
reader_key = require_role(READERS, lambda request: _recommender(request).res)   # the dashboard's views


def actor(key: ApiKey) -> str:
    """Who did it, as the audit log records it: the key's id, prefix, role and name."""
    return f"key:{key.key_id}:{key.prefix} ({key.role}{', ' + key.name if key.name else ''})"


def _surfaces(request: Request) -> list[str]:
    return list(_recommender(request).surfaces)


def _checked(request: Request, document: Any):
    ruleset, errors = validate(document, _surfaces(request))
    if errors:
        raise HTTPException(422, errors)
    return ruleset


def _stored(call, *args):
    try:
        return call(*args)
    except store.RuleSetError as exc:
        raise HTTPException(exc.status, str(exc)) from None


def _transition(request: Request, move, *args) -> dict:
    """A lifecycle step of recsys/rules/store.py in its own transaction; 404/409 when refused."""
    with _pool(request).connection() as conn:
        return _stored(move, conn, *args).as_dict()


def _pool(request: Request):
    return _recommender(request).res.pool


class Validated(BaseModel):
    valid: bool
    rules: int
    errors: list[dict] = Field(default_factory=list, description="[{path, reason}], a JSON path per error")


class PreviewRequest(BaseModel):
    surface: str = Field(max_length=64, pattern=PRINTABLE)
    user_id: str | None = Field(None, min_length=1, max_length=128, pattern=PRINTABLE)
    session_id: str | None = Field(None, min_length=1, max_length=128, pattern=PRINTABLE)
    sku: str | None = Field(None, max_length=4096, pattern=PRINTABLE, description="comma-separated")
    cart: str | None = Field(None, max_length=4096, pattern=PRINTABLE, description="comma-separated")
    device: str | None = Field(None, max_length=32, pattern=PRINTABLE)
    geo: str | None = Field(None, max_length=16, pattern=PRINTABLE)
    k: int = Field(12, ge=1, le=50)
    version: int | None = Field(None, ge=1, le=2**31 - 1, description="a stored version to preview against live")
    rule_set: dict | None = Field(None, description="or an unsaved rule set (validated like a new one)")


class ErrorAnswer(BaseModel):
    """A refusal: `detail` is a sentence, or a list of errors ({path, reason} for a rule set)."""
    detail: str | list[dict]


ERRORS = {code: {"model": ErrorAnswer, "description": text} for code, text in (
    (400, "the body is not readable JSON"), (401, "no valid API key"), (403, "the key's role may not do this"),
    (404, "no such version"), (409, "the version's state does not allow it"),
    (413, "request body over serve.max_body_bytes"), (422, "invalid: every error with its JSON path"),
    (503, "Postgres or the replica is unavailable"))}
# The body a rule set travels in: parsed by recsys.rules.schema (errors by JSON path), documented as its
# schema; its definitions join the OpenAPI document's components (`add_rule_set_schemas`).
_SCHEMA = RuleSet.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
RULE_SET_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/RuleSet"}}}}}


def add_rule_set_schemas(document: dict) -> dict:
    """The OpenAPI document with the rule set's JSON Schema under components.schemas."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(_SCHEMA.get("$defs", {}))
    schemas["RuleSet"] = {k: v for k, v in _SCHEMA.items() if k != "$defs"}
    return document
Version = Path(ge=1, le=2**31 - 1, description="a rule set version")


@router.get("/schema", responses=ERRORS)
def schema(key: ApiKey = Depends(reader_key)) -> dict:
    """The JSON Schema of a rule set."""
    return json_schema()


@router.post("/validate", response_model=Validated, responses=ERRORS, openapi_extra=RULE_SET_BODY)
def validate_rules(request: Request, document: Any = Body(...), key: ApiKey = Depends(merchandiser_key)):
    """Check a rule set without storing it: 200 when valid; 422 with every error's JSON path and reason
    otherwise (as creating it would answer)."""
    ruleset = _checked(request, document)
    return {"valid": True, "rules": len(ruleset.rules), "errors": []}


@router.post("", status_code=201, responses=ERRORS, openapi_extra=RULE_SET_BODY)
def create(request: Request, document: Any = Body(...), based_on: int | None = Query(None, ge=1, le=2**31 - 1),
           key: ApiKey = Depends(merchandiser_key)) -> dict:
    """Store a rule set as a new draft version (immutable). The audit's diff is against `based_on`, or live."""
    ruleset = _checked(request, document)
    with _pool(request).connection() as conn:
        return _stored(store.create, conn, ruleset.model_dump(mode="json", by_alias=True, exclude_none=True),
                       actor(key), based_on).as_dict()


@router.get("", responses=ERRORS)
def list_sets(request: Request, key: ApiKey = Depends(reader_key)) -> list[dict]:
    """Every version, newest first, with its state."""
    with _pool(request).connection() as conn:
        return [s.summary() for s in store.list_sets(conn)]


@router.get("/audit", responses=ERRORS)
def audit(request: Request, version: int | None = Query(None, ge=1, le=2**31 - 1), limit: int = Query(200, ge=1, le=5000),
          key: ApiKey = Depends(reader_key)) -> list[dict]:
    """Who did what when: create, shadow, publish, rollback, archive, with the JSON Patch of each change."""
    with _pool(request).connection() as conn:
        return store.audit_log(conn, version, limit)


@router.post("/rollback", responses=ERRORS)
def rollback(request: Request, key: ApiKey = Depends(merchandiser_key)) -> dict:
    """The previous live version becomes live again; replicas apply it within `rules.poll_s`."""
    return _transition(request, store.rollback, actor(key))


@router.post("/preview", responses=ERRORS)
def preview(request: Request, ask: PreviewRequest, key: ApiKey = Depends(merchandiser_key)) -> dict:
    """The slots for one request under live and under a draft (a stored version or `rule_set`), side
    by side from the same candidates, with explanations."""
    recommender = _recommender(request)
    if ask.surface not in recommender.surfaces:
        raise HTTPException(404, f"unknown surface {ask.surface!r}; known: {', '.join(recommender.surfaces)}")
    if (ask.version is None) == (ask.rule_set is None):
        raise HTTPException(422, "give either version or rule_set")
    if ask.rule_set is not None:
        ruleset, name = _checked(request, ask.rule_set), "draft"
    else:
        with _pool(request).connection() as conn:
            stored = _stored(store.get, conn, ask.version)
        ruleset, name = _checked(request, stored.body), store.label(stored.version)
    draft = recommender.res.rules.compile(ruleset, name, [sku for sku, _ in recommender.res.bestsellers])
    if draft is None:
        raise HTTPException(503, "the replica has no catalog snapshot yet")
    most = recommender.max_context_skus
    req = RecRequest(surface=ask.surface, user_id=ask.user_id, session_id=ask.session_id,
                     skus=sku_list("sku", ask.sku, most), cart=sku_list("cart", ask.cart, most),
                     device=ask.device, geo=ask.geo, k=ask.k, explain=True)
    return recommender.preview(req, {"live": recommender.res.rules.live, "draft": draft})


@router.get("/{version}", responses=ERRORS)
def get(request: Request, version: int = Version, key: ApiKey = Depends(reader_key)) -> dict:
    with _pool(request).connection() as conn:
        return _stored(store.get, conn, version).as_dict()


@router.post("/{version}/shadow", responses=ERRORS)
def start_shadow(request: Request, version: int = Version, key: ApiKey = Depends(merchandiser_key)) -> dict:
    """Run a draft in shadow on `rules.shadow.share` of requests (never served)."""
    return _transition(request, store.shadow, version, actor(key))


@router.get("/{version}/shadow-report", responses=ERRORS)
def shadow_report(request: Request, version: int = Version, key: ApiKey = Depends(reader_key)) -> dict:
    """What the version did in shadow against live: overlap@k, pins honoured, blocked items removed,
    margin, price, coverage and long-tail share, and the time it cost."""
    res = _recommender(request).res
    with res.pool.connection() as conn:
        _stored(store.get, conn, version)
        return shadow_runs.report(conn, version, len(res.catalog.items) if res.catalog is not None else None)


@router.post("/{version}/publish", responses=ERRORS)
def publish(request: Request, version: int = Version, key: ApiKey = Depends(merchandiser_key)) -> dict:
    """Make a draft or the shadow set live (one transaction); replicas apply it within `rules.poll_s`."""
    return _transition(request, store.publish, version, actor(key))


@router.post("/{version}/archive", responses=ERRORS)
def archive(request: Request, version: int = Version, key: ApiKey = Depends(merchandiser_key)) -> dict:
    """Retire a version (archiving the live one leaves serving without rules)."""
    return _transition(request, store.archive, version, actor(key))
