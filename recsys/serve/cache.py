"""The response cache: a surface's rail per user (or session) and request context, in Redis for the
surface's `cache_ttl_s`.

Freshness: every event applied to a user bumps the `version` in the user's hash (the online store's
Lua script). An entry keeps the version it was computed at, and the lookup reads the current version
in the same round trip, so a new event makes the user's cached rails stale at once.
"""

from __future__ import annotations

import hashlib
import orjson

from recsys.features.online_store import OnlineStore, escape_id
from recsys.serve.request import RecRequest


class ResponseCache:
    def __init__(self, store: OnlineStore, surfaces: dict):
        self.store = store
        self.ttl_ms = {name: int(float(s["cache_ttl_s"]) * 1000) for name, s in surfaces.items()}

    def enabled(self, req: RecRequest) -> bool:
        return self.ttl_ms.get(req.surface, 0) > 0 and not req.explain

    def key(self, req: RecRequest, rules_version: str | None = None) -> str:
        """Per surface, user (or session) and context, per live rule set and per the models of the
        request's arm: a publish, a rollback or a new model version makes every rail cached before
        unreachable at once."""
        who = (f"u:{escape_id(req.user_id)}" if req.user_id else f"s:{escape_id(req.session_id)}" if req.session_id
               else "anon")
        context = orjson.dumps([req.skus, req.cart, req.k, req.device, req.geo, rules_version,
                                req.arm.label if req.arm else None])
        return f"{self.store.p}rc:{req.surface}:{who}:{hashlib.sha1(context).hexdigest()[:16]}"

    def get(self, req: RecRequest, rules_version: str | None = None) -> tuple[dict | None, int]:
        """(the cached response or None, the user's version now: what a new entry must be stored with).
        Serving reads the entry in the features stage's one round trip instead (recsys/serve/stages/features.py)."""
        pipe = self.store.r.pipeline(transaction=False)
        if req.user_id:
            pipe.hget(self.store.user_key(req.user_id), "version")
        pipe.get(self.key(req, rules_version))
        *version, raw = pipe.execute()
        now = int(version[0] or 0) if version else 0
        return self.fresh(raw, now), now

    @staticmethod
    def fresh(raw: bytes | None, version: int) -> dict | None:
        """The cached response in `raw` if it was computed at the user's current `version`."""
        if raw is None:
            return None
        entry = orjson.loads(raw)
        return entry["response"] if entry["version"] == version else None

    def entry(self, req: RecRequest, version: int, response: dict) -> tuple[str, bytes, int]:
        """(key, value, ttl in ms) of the entry for `response`, computed at the user's `version`
        under the response's rule set."""
        body = {k: v for k, v in response.items() if k != "request_id"}
        value = orjson.dumps({"version": version, "response": body}, option=orjson.OPT_SERIALIZE_NUMPY)
        return self.key(req, response.get("rule_set_version")), value, self.ttl_ms[req.surface]

    def put(self, req: RecRequest, version: int, response: dict) -> None:
        key, value, ttl_ms = self.entry(req, version, response)
        self.store.r.set(key, value, px=ttl_ms)

    def clear(self) -> int:
        """Drop every cached rail (e.g. after a new model or topology goes live)."""
        removed = 0
        for key in self.store.r.scan_iter(match=f"{self.store.p}rc:*", count=1000):
            removed += self.store.r.unlink(key)
        return removed
