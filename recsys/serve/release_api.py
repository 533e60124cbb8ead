"""The release admin API for the ML team (role `ml`): the model registry with each version's metrics and
gate report (`/v1/admin/models`), and the canary (`/v1/admin/canary`): its stage, per-arm metrics, the
rollback test and the decision log; advance, roll back or abort it. Every transition is audited under
the key's identity (recsys/release/canary.py)."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Request
from pydantic import BaseModel, Field

from recsys import registry
from recsys.auth import ApiKey
from recsys.auth.http import require_role
from recsys.auth.roles import READERS
from recsys.features.events import PRINTABLE
from recsys.release import canary as canaries
from recsys.release.controller import numbers_of
from recsys.serve.rules_api import ERRORS, actor

router = APIRouter(prefix="/v1/admin", tags=["release governance"])


def _res(request: Request):
    from recsys.serve.api import recommender_of

    return recommender_of(request).res


ml_key = require_role("ml", _res)
reader_key = require_role(READERS, _res)   # the dashboard's views: every role but the storefront's


class Reason(BaseModel):
    reason: str = Field("", max_length=500, pattern=PRINTABLE, description="why, for the audit log")


def _model(record: registry.ModelRecord) -> dict:
    return {"version": record.version, "kind": record.kind, "stage": record.stage, "created_at": record.created_at,
            "artifact_uri": record.artifact_uri, "metrics": record.metrics, "gates": record.gates}


@router.get("/models", responses=ERRORS)
def models(request: Request, key: ApiKey = Depends(reader_key)) -> list[dict]:
    """Every registered version, oldest first, with its stage, metrics and last gate report."""
    with _res(request).pool.connection() as conn:
        return [_model(r) for r in registry.list_models(conn)]


@router.get("/models/{version}", responses=ERRORS)
def model(request: Request, version: str = Path(max_length=128, pattern=PRINTABLE),
          key: ApiKey = Depends(reader_key)) -> dict:
    with _res(request).pool.connection() as conn:
        try:
            return _model(registry.get(conn, version))
        except KeyError:
            raise HTTPException(404, f"no model version {version!r}") from None


@router.post("/models/{version}/release", responses=ERRORS)
def release_version(request: Request, version: str = Path(max_length=128, pattern=PRINTABLE),
                    key: ApiKey = Depends(ml_key)) -> dict:
    """Promote a candidate: its gates run again now, then it goes into a canary (a live version of its
    kind exists), live (none does), or stays held while another canary runs. The gates' reasons come
    back either way; 409 when the gates refused it."""
    from recsys.release.promote import release

    res = _res(request)
    with res.pool.connection() as conn:
        try:
            record = registry.get(conn, version)
        except KeyError:
            raise HTTPException(404, f"no model version {version!r}") from None
        if record.stage not in ("candidate", "rejected"):
            raise HTTPException(409, f"{version} is {record.stage}: only a candidate (or a rejected version, "
                                     "gated again) can be released")
        outcome = release(conn, res.cfg, {record.kind: version}, actor(key))
    body = {"action": outcome.action, "versions": outcome.versions, "canary_id": outcome.canary_id,
            "reason": outcome.reason, "line": outcome.line(), "gates": [r.as_dict() for r in outcome.reports]}
    if outcome.action == "rejected":
        raise HTTPException(409, body)
    return body


def status_of(conn) -> dict:
    """The running canary (else the latest), its numbers and its log; what the replica serves."""
    c = canaries.running(conn) or canaries.latest(conn)
    if c is None:
        return {"canary": None}
    numbers, _ = numbers_of(conn, c)
    return {"canary": c.as_dict(), "numbers": numbers, "log": canaries.log(conn, c.canary_id)}


@router.get("/canary", responses=ERRORS)
def status(request: Request, key: ApiKey = Depends(reader_key)) -> dict:
    """The canary's state machine: stage, share, arms' versions, per-arm metrics (since the start and in
    this stage), the rollback test's numbers, every decision so far."""
    res = _res(request)
    with res.pool.connection() as conn:
        out = status_of(conn)
    out["serving"] = {"live": res.release.live.models,
                      "canary": None if res.release.canary is None else
                      {"share": res.release.canary[1], "canary_models": res.release.canary[3].models}}
    return out


def _move(request: Request, move, key: ApiKey, reason: str, default: str) -> dict:
    with _res(request).pool.connection() as conn:
        c = canaries.running(conn) or (canaries.latest(conn) if move is canaries.rollback else None)
        if c is None:
            raise HTTPException(404, "no canary is running")
        try:
            moved = move(conn, c.canary_id, actor(key), reason or default)
        except canaries.CanaryError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return moved.as_dict()


@router.post("/canary/advance", responses=ERRORS)
def advance(request: Request, body: Reason = Body(Reason()), key: ApiKey = Depends(ml_key)) -> dict:
    """The next stage now (from 100%: promote), whatever the criteria say."""
    return _move(request, canaries.advance, key, body.reason, "advanced by hand")


@router.post("/canary/rollback", responses=ERRORS)
def rollback(request: Request, body: Reason = Body(Reason()), key: ApiKey = Depends(ml_key)) -> dict:
    """Everyone back on the control's versions (also after a promotion: the previous versions live again)."""
    return _move(request, canaries.rollback, key, body.reason, "rolled back by hand")


@router.post("/canary/abort", responses=ERRORS)
def abort(request: Request, body: Reason = Body(Reason()), key: ApiKey = Depends(ml_key)) -> dict:
    """Stop without a verdict: the candidate goes back to `candidate`."""
    return _move(request, canaries.abort, key, body.reason, "aborted by hand")
