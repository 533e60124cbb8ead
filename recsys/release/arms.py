"""Which models serve a request: the live versions, or during a canary the arm a user is assigned to.

A user (a session for anonymous traffic, else the request) is in the canary arm when a keyed hash of
its id under the canary's salt falls below the canary's share: stable across requests and replicas,
and monotone in the share, so a user in the canary at 10% is still in it at 50%. Every replica polls
Postgres for the live versions and the running canary (beside the rule sets, every `rules.poll_s`),
loads a new arm's models before it switches to it, and serves the control to everyone while the
canary's models cannot be loaded (so an impression's arm is always what served it).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger(__name__)

STATE = """
SELECT (SELECT jsonb_object_agg(kind, version) FROM models WHERE stage = 'live' AND kind = ANY(%s)),
       (SELECT row_to_json(c) FROM (SELECT canary_id, candidate, control, salt, share FROM canaries
                                    WHERE state = 'running') c)
"""


@dataclass(frozen=True)
class Arm:
    name: str                                   # "live" (no canary), "control" or "canary"
    models: dict = field(default_factory=dict)  # kind -> version
    canary_id: int | None = None

    @property
    def label(self) -> str:
        """The versions that serve this arm, in one string (the response's `model_version`, the cache key)."""
        return "+".join(self.models[k] for k in sorted(self.models))


def unit_hash(salt: str, user_id: str | None, session_id: str | None = None, request_id: str = "") -> float:
    """A number in [0, 1) from a keyed hash of the user (of the session for anonymous traffic, else the
    request) under `salt`: the same on every replica and every request. Arms are ranges of it."""
    who = (user_id and f"u:{user_id}") or (session_id and f"s:{session_id}") or f"r:{request_id}"
    digest = hashlib.blake2b(who.encode(), key=salt.encode()[:64], digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64


def in_canary(salt: str, share: float, user_id: str | None, session_id: str | None, request_id: str) -> bool:
    return unit_hash(salt, user_id, session_id, request_id) < share


class ReleaseBook:
    def __init__(self, served_kinds: list[str]):
        self.kinds = list(served_kinds)
        self.live = Arm("live")
        self.canary: tuple[str, float, Arm, Arm] | None = None   # (salt, share, control, canary)
        self._state = None

    def arm_for(self, user_id: str | None, session_id: str | None, request_id: str) -> Arm:
        running = self.canary
        if running is None:
            return self.live
        salt, share, control, canary = running
        return canary if in_canary(salt, share, user_id, session_id, request_id) else control

    def poll(self, conn, load: Callable[[dict], object]) -> bool:
        """Read the live versions and the running canary; `load(models)` each new arm's models before
        switching to it. True when something changed."""
        live, running = conn.execute(STATE, (self.kinds,)).fetchone()
        state = json.dumps([live, running], sort_keys=True)
        if state == self._state:
            return False
        live_arm = Arm("live", live or {})
        load(live_arm.models)
        canary = None
        if running:
            control = Arm("control", running["control"], running["canary_id"])
            arm = Arm("canary", {**running["control"], **running["candidate"]}, running["canary_id"])
            try:
                load(control.models)
                load(arm.models)
                canary = (running["salt"], float(running["share"]), control, arm)
            except Exception as exc:   # everyone on the control meanwhile; retried at the next poll
                log.warning("canary %s: models not loaded, serving the control to everyone: %s",
                            running["canary_id"], exc)
                canary = (running["salt"], 0.0, control, arm)
                state = None
        self.live, self.canary, self._state = live_arm, canary, state
        return True
