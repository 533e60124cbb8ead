"""FastAPI dependencies that check a request's key. The security schemes make the OpenAPI document
declare how to authenticate (a Bearer token, or the same key in an `X-API-Key` header)."""

from __future__ import annotations

from typing import Callable

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from recsys.auth.keys import ApiKey
from recsys.auth.verifier import AuthError

bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer rk_<role>_...")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the same key in X-API-Key")


async def presented_key(credentials: HTTPAuthorizationCredentials | None = Security(bearer),
                        header_key: str | None = Security(api_key_header)) -> str | None:
    return header_key or (credentials.credentials if credentials else None)


def require_role(needed: str | tuple[str, ...], resources_of: Callable[[Request], object],
                 public_when: Callable[[object], bool] | None = None):
    """A dependency: the caller's ApiKey when it holds `needed` (or admin), else 401/403/503.
    `public_when(resources)` true: no key needed (the dependency returns None).

    Async, so FastAPI runs it on the event loop instead of handing it to a worker thread (a sync
    dependency costs a thread hop per request, the largest single cost of a cached answer); the key
    check itself may read Postgres, so it runs on a worker thread, and only when a key is needed."""

    async def dependency(request: Request, key: str | None = Security(presented_key)) -> ApiKey | None:
        res = resources_of(request)
        if public_when is not None and public_when(res):
            return None
        try:
            return await run_in_threadpool(res.key_verifier().require, key, needed)
        except AuthError as exc:
            raise HTTPException(exc.status, exc.detail, headers=exc.headers) from None

    return dependency
