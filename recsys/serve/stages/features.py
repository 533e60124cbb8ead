"""Stage 1, features: everything Redis knows about this request, in one round trip.

One pipeline reads the surface's cached rail (when the response cache applies), the user's state
(views, cart, purchases, affinities, the version every event bumps) and the user's stored two-tower
vector. A cached rail computed at the user's current version is the answer; otherwise the state goes
on, merged with the request's own context (the device and geo of this visit beat the stored ones).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from omegaconf import OmegaConf

from recsys.features.online_store import UserState
from recsys.models.user_vectors import UserVectorStore
from recsys.serve.cache import ResponseCache
from recsys.serve.request import RecRequest
from recsys.serve.resources import Resources


@dataclass
class Known:
    user: UserState
    cached: dict | None = None           # the surface's rail from the response cache, still fresh
    cache_version: int | None = None     # the user's version now, to store a new entry at; None: not cached
    rules_version: str | None = None     # the live rule set the cache key was made for


class Features:
    def __init__(self, cfg, res: Resources):
        self.res = res
        self.cache = ResponseCache(res.store, OmegaConf.to_container(cfg.surfaces, resolve=True))
        self.vectors = UserVectorStore(res.store.r, res.store.p)

    def lookup(self, req: RecRequest) -> Known:
        store, cached = self.res.store, self.cache.enabled(req)
        rules_version = self.res.rules.live_version   # a rail built under another rule set is never served
        pipe = store.r.pipeline(transaction=False)
        if cached:
            pipe.get(self.cache.key(req, rules_version))
        if req.user_id:
            store.queue_user_state(pipe, req.user_id)
            self.vectors.queue_get(pipe, req.user_id)
        replies = pipe.execute() if len(pipe) else []
        entry = replies.pop(0) if cached else None
        version = int(replies[0].get(b"version", 0)) if req.user_id else 0
        if entry is not None:
            hit = self.cache.fresh(entry, version)
            if hit is not None:
                return Known(UserState(user_id=req.user_id or ""), cached=hit)
        if req.user_id:
            user = store.parse_user_state(req.user_id, replies[:store.USER_STATE_REPLIES], time.time())
            user.stored_vector = self.vectors.parse(replies[store.USER_STATE_REPLIES])
        else:
            user = UserState(user_id="")
        user = replace(user, device=req.device or user.device, geo=req.geo or user.geo)
        return Known(user, cache_version=version if cached else None, rules_version=rules_version)
