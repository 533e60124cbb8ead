"""Signing in to the dashboard with an API key (recsys/auth): the key is checked against Postgres and
kept in an HttpOnly, SameSite=Strict cookie, so that the browser's scripts cannot read it and no other
site can send it; every page checks it again (cached `auth.cache_ttl_s`, so a revoked key stops working
within that). A storefront key cannot sign in: it is not for people."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import RedirectResponse

from recsys.auth import AuthError, Verifier
from recsys.auth.keys import ApiKey
from recsys.auth.roles import READERS, allows

COOKIE = "recsys_key"


class NotSignedIn(Exception):
    """Raised by `signed_in`; the app answers with the login page (a redirect for a page, 401 for the API)."""

    def __init__(self, reason: str, status: int = 401):
        super().__init__(reason)
        self.reason, self.status = reason, status


class Session:
    def __init__(self, key: str, record: ApiKey):
        self.key, self.record = key, record

    @property
    def role(self) -> str:
        return self.record.role

    def may(self, needed: str) -> bool:
        return allows(self.role, needed)


def check(verifier: Verifier, key: str | None) -> Session:
    """The session of `key` when it may read the dashboard, else NotSignedIn with the reason."""
    if not key:
        raise NotSignedIn("sign in with an API key")
    try:
        return Session(key, verifier.require(key, READERS))
    except AuthError as exc:
        raise NotSignedIn(exc.detail, exc.status) from None


def signed_in(request: Request) -> Session:
    """FastAPI dependency of every dashboard page and call."""
    return check(request.app.state.verifier, request.cookies.get(COOKIE))


def sign_in(response: RedirectResponse, key: str, secure: bool) -> RedirectResponse:
    response.set_cookie(COOKIE, key, httponly=True, samesite="strict", secure=secure, path="/")
    return response
