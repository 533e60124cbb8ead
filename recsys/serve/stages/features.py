"""Stage 1, features: what serving knows about the user right now (Redis), merged with the request's
own context (the device and geo of this visit beat the stored ones)."""

from __future__ import annotations

from dataclasses import replace

from recsys.features.online_store import UserState
from recsys.serve.request import RecRequest
from recsys.serve.resources import Resources


class Features:
    def __init__(self, cfg, res: Resources):
        self.res = res

    def user_state(self, req: RecRequest) -> UserState:
        user = self.res.store.user_state(req.user_id) if req.user_id else UserState(user_id="")
        return replace(user, device=req.device or user.device, geo=req.geo or user.geo)
