"""The canary controller: one `tick` reads the running canary and its per-arm metrics, and rolls it
back, advances it, or leaves it.

It runs as a detached Ray actor (`CanaryController`, started by `recsys canary watch --on-ray` and by
`make demo`), because the canary must move while nobody watches, Ray restarts a crashed actor
(max_restarts=-1), and the actor lives on the cluster beside the Serve application it governs. It holds
no state: everything is in Postgres and each transition checks the stage it expects, so a restarted or
duplicated controller is harmless. `recsys canary watch` runs the same loop in a terminal (or cron).

    rollback  when the mSPRT (recsys/release/sequential.py) finds canary CTR < ratio x control CTR,
              on every impression since the canary started (the test is valid at any number of looks);
    advance   when the stage has min_impressions canary impressions and has lasted min_duration_s, and
              the canary's CTR since the start is not clearly below ratio x the control's (theta_hat no
              more than hold_below_se standard errors under 0); from the last stage (100%) that promotes
              the candidate;
    hold      otherwise: a candidate that looks worse than the line, though not yet significantly, stays
              at its share until the test decides or its estimate recovers. "No significant drop" is not
              "no drop": without this, an under-powered stage (few clicks) promoted candidates whose CTR
              was far below the control's (docs/release.md);
    abort     a stage held past max_stage_duration_s: no verdict, the control keeps serving and the next
              release is no longer blocked behind it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import psycopg

from recsys.release import canary as canaries
from recsys.release.metrics import arm_metrics
from recsys.release.sequential import msprt

log = logging.getLogger(__name__)
ACTOR = "controller"


@dataclass
class Decision:
    canary_id: int
    action: str          # "rollback", "advance", "promote", "hold"
    reason: str
    numbers: dict


def numbers_of(conn: psycopg.Connection, c: canaries.Canary) -> tuple[dict, object]:
    """The per-arm metrics (since the start and in this stage) and the rollback test on them.

    The test compares the arms within the current stage only: across stages the canary's share changes
    while CTR drifts over time (time of day, shoppers tiring of what they saw), so pooled since the start
    the canary's impressions would sit later in time than the control's and differ for that alone.
    Each stage with a concurrent control runs its own always-valid test at alpha / their number, so the
    chance of any false rollback stays under alpha. At 100% there is no control: the verdict was the
    50% stage's, and the last stage only has to last."""
    s = c.settings
    total = arm_metrics(conn, c.canary_id, c.started_at)
    stage = arm_metrics(conn, c.canary_id, c.stage_started_at)
    compared = sum(1 for share in c.stages if share < 1.0) or 1
    test = msprt(stage["control"].clicked, stage["control"].impressions, stage["canary"].clicked,
                 stage["canary"].impressions, float(s["rollback_ratio"]), float(s["alpha"]) / compared,
                 float(s["tau"]), int(s["min_per_arm"]), float(s.get("min_expected_clicks", 0)),
                 stage["control"].ctr_variance, stage["canary"].ctr_variance)
    return {"since_start": {arm: m.as_dict() for arm, m in total.items()},
            "this_stage": {arm: m.as_dict() for arm, m in stage.items()},
            "test": {"name": "mSPRT (normal approximation), one-sided, this stage, variance over users",
                     **test.as_dict()},
            "stage": c.stage, "share": c.share}, test


def verdict(test, in_stage: int, lasted_s: float, share: float, settings: dict) -> tuple[str, str]:
    """(action, reason) for a running canary's stage: rollback, advance, hold or abort. Pure, so the
    rule can be simulated (tests/test_release_sequential.py); `tick` applies it."""
    s = settings
    line = f"{float(s['rollback_ratio'])} x control CTR {test.p_control:.4f}"
    if test.reject:
        return "rollback", (f"canary CTR {test.p_canary:.4f} < {line} (mSPRT likelihood ratio "
                            f"{test.likelihood_ratio:.1f} >= {test.threshold:.0f}, alpha {1 / test.threshold:g} in this stage)")
    if in_stage < int(s["min_impressions"]) or lasted_s < float(s["min_duration_s"]):
        return "hold", f"stage {share:.0%}: {in_stage} canary impressions, {lasted_s:.0f} s"
    hold_se = s.get("hold_below_se")   # canaries started before the setting existed advance as they did
    if hold_se is not None and test.theta < -float(hold_se) * test.std_error:
        below = (f"canary CTR {test.p_canary:.4f} < {line} by {-test.theta / test.std_error:.1f} standard errors "
                 f"(> {float(hold_se):g}), not significantly (likelihood ratio {test.likelihood_ratio:.1f} < "
                 f"{test.threshold:.0f})")
        limit = s.get("max_stage_duration_s")
        if limit is not None and lasted_s >= float(limit):
            return "abort", f"inconclusive: stage {share:.0%} held {lasted_s:.0f} s >= {limit} s with {below}"
        return "hold", f"stage {share:.0%}: held, {below}"
    return "advance", (f"stage {share:.0%}: {in_stage} canary impressions >= {s['min_impressions']} in "
                       f"{lasted_s:.0f} s >= {s['min_duration_s']} s, no significant CTR drop, and CTR not "
                       f"clearly below the line")


def tick(conn: psycopg.Connection, now: datetime | None = None, actor: str = ACTOR) -> Decision | None:
    """Decide on the running canary once and carry the decision out; None when none runs."""
    c = canaries.running(conn)
    if c is None:
        return None
    now = now or conn.execute("SELECT now()").fetchone()[0]
    numbers, test = numbers_of(conn, c)
    action, reason = verdict(test, numbers["this_stage"]["canary"]["impressions"],
                             (now - c.stage_started_at).total_seconds(), c.share, c.settings)
    if action == "rollback":
        canaries.rollback(conn, c.canary_id, actor, reason, numbers, now)
    elif action == "abort":
        canaries.abort(conn, c.canary_id, actor, reason, now, numbers)
    elif action == "advance":
        canaries.advance(conn, c.canary_id, actor, reason, numbers, from_stage=c.stage, now=now)
        action = "promote" if c.stage + 1 >= len(c.stages) else "advance"
    return Decision(c.canary_id, action, reason, numbers)


def watch(dsn: str, interval_s: float, stop_after_s: float | None = None) -> None:
    """Tick every `interval_s` until stopped; a failed tick (Postgres away) is logged and retried."""
    started = time.monotonic()
    while stop_after_s is None or time.monotonic() - started < stop_after_s:
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
                decision = tick(conn)
            if decision is not None and decision.action != "hold":
                log.warning("canary %s: %s: %s", decision.canary_id, decision.action, decision.reason)
        except Exception as exc:
            log.warning("canary controller tick failed (retrying in %.0f s): %s", interval_s, exc)
        time.sleep(interval_s)


class CanaryController:
    """The controller as a Ray actor: its constructor starts the `watch` loop on a thread, so an actor
    Ray restarts after a crash resumes by itself."""

    def __init__(self, dsn: str, interval_s: float):
        logging.basicConfig(level=logging.WARNING)
        threading.Thread(target=watch, args=(dsn, interval_s), name="canary-controller", daemon=True).start()

    def ping(self) -> str:
        return "ok"


ACTOR_NAME = "recsys-canary-controller"
NAMESPACE = "recsys"   # the consumers' namespace (recsys/features/supervisor.py)


def start_on_ray(cfg) -> str:
    """Start (or find) the detached controller actor on the configured Ray cluster."""
    import ray

    from recsys.raycluster import ensure_ray
    from recsys.services import Postgres

    ensure_ray(cfg)
    try:
        actor = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        actor = ray.remote(CanaryController).options(
            name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached", max_restarts=-1, num_cpus=0,
            ).remote(Postgres(cfg).dsn, float(cfg.release.canary.controller_interval_s))
    ray.get(actor.ping.remote(), timeout=60)
    return f"canary controller running on Ray as {ACTOR_NAME} (every {cfg.release.canary.controller_interval_s} s)"


def stop_on_ray(cfg) -> bool:
    """Remove the controller actor; True when there was one."""
    import ray

    from recsys.raycluster import ensure_ray

    ensure_ray(cfg)
    try:
        ray.kill(ray.get_actor(ACTOR_NAME, namespace=NAMESPACE), no_restart=True)
        return True
    except ValueError:
        return False
