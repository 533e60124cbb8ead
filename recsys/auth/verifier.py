"""Checks a presented key and its role for each request, with a small in-process cache.

A key's record is cached for `ttl_s` seconds (`auth.cache_ttl_s`), unknown keys too, so most requests
never reach Postgres: a revocation therefore takes effect within `ttl_s` on every replica. While
Postgres is unreachable an expired entry is still used (a valid key keeps working through an outage,
and a key revoked during the outage keeps working until Postgres is back); a key with no entry at
all is answered 503 with Retry-After, since it can be neither accepted nor refused.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, ContextManager

import psycopg

from recsys.auth.keys import ApiKey, find_key, hash_key
from recsys.auth.roles import allows

log = logging.getLogger(__name__)


class AuthError(Exception):
    """Refusal with its HTTP status (401, 403 or 503) and the headers that go with it."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def unauthorized(detail: str) -> AuthError:
    return AuthError(401, detail, {"WWW-Authenticate": "Bearer"})


class Verifier:
    def __init__(self, connection: Callable[[], ContextManager[psycopg.Connection]], ttl_s: float,
                 retry_after_s: int = 5, max_entries: int = 10_000):
        """`connection()`: a context manager yielding a connection (a pool's `connection`)."""
        self.connection = connection
        self.ttl_s = ttl_s
        self.retry_after_s = retry_after_s
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}   # key hash -> (expires, record or unknown)
        self._lock = threading.Lock()

    def require(self, key: str | None, needed: str | tuple[str, ...]) -> ApiKey:
        """The key's record when it is active and its role allows `needed`; otherwise AuthError."""
        if not key:
            raise unauthorized("an API key is required (Authorization: Bearer <key> or X-API-Key: <key>)")
        record = self.lookup(key)
        if record is None or not record.active:
            raise unauthorized("unknown or revoked API key")
        if not allows(record.role, needed):
            wanted = needed if isinstance(needed, str) else " or ".join(needed)
            raise AuthError(403, f"a {record.role} key may not do this; it needs {wanted}")
        return record

    def lookup(self, key: str) -> ApiKey | None:
        digest = hash_key(key)
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            with self.connection() as conn:
                record = find_key(conn, key)
        except Exception as exc:  # Postgres down or saturated: stale beats an error
            if cached is not None:
                return cached[1]
            log.warning("API key lookup failed: %s", exc)
            raise AuthError(503, "key store unavailable; retry",
                            {"Retry-After": str(self.retry_after_s)}) from exc
        self._remember(digest, record)
        return record

    def _remember(self, digest: str, record: ApiKey | None) -> None:
        with self._lock:
            if len(self._cache) >= self.max_entries:   # bounded: random keys cannot grow it without end
                now = time.monotonic()
                self._cache = {d: e for d, e in self._cache.items() if e[0] > now}
                while len(self._cache) >= self.max_entries:
                    self._cache.pop(next(iter(self._cache)))
            self._cache[digest] = (time.monotonic() + self.ttl_s, record)

    def forget(self) -> None:
        """Drop the cache (after a revocation through this process, so it applies here at once)."""
        with self._lock:
            self._cache.clear()
