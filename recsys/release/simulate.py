"""A canary run end to end against simulated shoppers: the real serving code picks each shopper's arm
and rail, the shoppers of recsys/sim respond (they never see the arm), impressions and the events
they cause are stored as the consumer stores them, and the controller decides on a simulated clock.

Used by the canary tests (tests/test_canary_simulation.py) and `recsys bench --only canary`
(`canary.rollback.impressions_to_decision` in docs/benchmarks.json).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import psycopg

from recsys.features.event_log import write_rows
from recsys.features.impression_log import write_impressions
from recsys.release import canary as canaries
from recsys.release.controller import Decision, tick
from recsys.serve.request import RecRequest


@dataclass
class SimulatedCanary:
    canary_id: int
    outcome: str                     # promoted, rolled_back, or running (ran out of impressions)
    impressions: int                 # served while the canary ran, both arms
    decisions: list[Decision] = field(default_factory=list)
    final: dict = field(default_factory=dict)   # the per-arm numbers at the end


def _event_row(e: dict) -> tuple:
    ctx = e["context"]
    return (e["event_id"], e["type"], e["user_id"], e["session_id"], e["sku"], e["ts"].to_pydatetime(),
            e["device"], e["geo"], e["price"], e["quantity"], e["order_id"], ctx["surface"], ctx["request_id"],
            ctx["slot"])


def run_canary(conn: psycopg.Connection, recommender, world, canary_id: int, max_impressions: int,
               seconds_per_impression: float = 1.0, tick_every: int = 100, seed: int = 0,
               surface: str = "homepage_hero") -> SimulatedCanary:
    """Serve simulated shoppers until the canary is decided or `max_impressions` were served."""
    rng = np.random.default_rng(seed)
    users = world.users()["user_id"].to_numpy()
    c = canaries.get(conn, canary_id)
    clock: datetime = c.started_at
    impressions, events, decisions, served = [], [], [], 0
    while served < max_impressions:
        user = str(users[rng.integers(len(users))])
        clock += timedelta(seconds=seconds_per_impression)
        # stamped with the simulated time: the impression the replica logs through the broker (when a
        # consumer runs) is then the same row as the one written here, not a second one
        req = RecRequest(surface=surface, user_id=user, session_id=f"{user}-{clock:%Y%m%d}", ts=clock.timestamp())
        body = recommender.recommend(req)
        skus = [i["sku"] for i in body["items"]]
        impressions.append({"request_id": req.request_id, "ts": clock.timestamp(), "surface": surface,
                            "user_id": user, "session_id": req.session_id, "skus": skus,
                            "sources": [i["source"] for i in body["items"]], "model_version": body["model_version"],
                            "rule_set_version": body["rule_set_version"], "arm": body["arm"],
                            "canary_id": req.arm.canary_id, "degraded": body["degraded"]})
        events += [_event_row(e) for e in world.respond(user, skus, clock, rng_seed=int(rng.integers(2**31)),
                                                         surface=surface, request_id=req.request_id,
                                                         session_id=req.session_id)]
        served += 1
        if served % tick_every == 0 or served == max_impressions:
            write_impressions(conn, impressions)
            write_rows(conn, events)
            impressions, events = [], []
            decision = tick(conn, now=clock)
            if decision is not None and decision.action != "hold":
                decisions.append(decision)
                recommender.res.poll_release()   # as the replica's poll thread would within rules.poll_s
            if decision is None or decision.action in ("rollback", "promote", "abort"):
                break
    final = canaries.get(conn, canary_id)
    return SimulatedCanary(canary_id, final.state, served, decisions,
                           decisions[-1].numbers if decisions else {})


def forget(conn: psycopg.Connection, canary_id: int) -> int:
    """Delete a simulated canary's impressions and the shoppers' events attributed to them (the log then
    holds only what real traffic did: the ranker trains on it); its decisions stay in canary_log."""
    with conn.transaction():
        conn.execute("DELETE FROM events WHERE request_id IN "
                     "(SELECT request_id FROM impressions WHERE canary_id = %s)", (canary_id,))
        return conn.execute("DELETE FROM impressions WHERE canary_id = %s", (canary_id,)).rowcount
