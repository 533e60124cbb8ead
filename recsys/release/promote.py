"""The one way a model version reaches users: its gates, then a canary, or live at once.

Every promotion path calls `release` (the nightly pipeline, `recsys.rank.train`, incremental ALS, cold
items). The gates run first (recsys/release/gates.py); a failure rejects the version with its reasons.
A version that passes enters a canary (recsys/release/canary.py) when its kind is in
`release.canary.kinds` and a live version exists to compare with; otherwise (the first model of a kind,
or a path that skips the canary, such as the incremental fold-in) it goes live now.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from recsys import registry
from recsys.release import canary
from recsys.release.gates import GateReport, run_gates


@dataclass
class Outcome:
    action: str                    # for the versions that passed: "live", "canary", "held" (a canary is
    versions: dict[str, str]       # running); "rejected" when none passed
    reports: list[GateReport] = field(default_factory=list)
    canary_id: int | None = None
    reason: str = ""
    rejected: dict[str, str] = field(default_factory=dict)   # kind -> version the gates refused

    def line(self) -> str:
        refused = "; ".join(f for r in self.reports for f in r.failures)
        names = ", ".join(self.versions.values())
        if self.action == "rejected":
            return f"{', '.join(self.rejected.values())}: rejected by the gates: {refused}"
        if self.action == "canary":
            said = f"{names}: gates passed, canary {self.canary_id} started"
        else:
            said = f"{names}: {self.action}" + (f" ({self.reason})" if self.reason else "")
        if self.rejected:
            said += f"; {', '.join(self.rejected.values())} rejected by the gates: {refused}"
        return said


def make_live(conn: psycopg.Connection, version: str) -> None:
    """Serve `version` to everyone (replicas pick it up within `rules.poll_s`); a two-tower's item
    vector set goes live with it."""
    record = registry.set_stage(conn, version, "live")
    if record.kind == "two_tower":
        from recsys.catalog import vectors

        vectors.make_live(conn, version)


def release(conn: psycopg.Connection, cfg, versions: dict[str, str], actor: str, canary_allowed: bool = True,
            gate_kind: str | None = None) -> Outcome:
    """Gate each of `versions` (kind -> version); those that pass go on together (a canary, or live),
    those that fail are rejected (each version stands on its own gates: a nightly ranker that fails does
    not hold back the two-tower)."""
    reports = [run_gates(conn, cfg, version, gate_kind) for version in versions.values()]
    rejected = {kind: v for (kind, v), r in zip(versions.items(), reports) if not r.passed}
    versions = {kind: v for kind, v in versions.items() if kind not in rejected}
    if not versions:
        return Outcome("rejected", versions, reports, rejected=rejected)
    outcome = _route(conn, cfg, versions, actor, canary_allowed)
    outcome.reports, outcome.rejected = reports, rejected
    return outcome


def _route(conn: psycopg.Connection, cfg, versions: dict[str, str], actor: str, canary_allowed: bool) -> Outcome:
    """Versions that passed their gates: into a canary, held while one runs, or live."""
    running = canary.running(conn)
    kinds = set(cfg.release.canary.kinds)
    with_live = [k for k in versions if registry.live(conn, k) is not None]
    wants_canary = canary_allowed and bool(cfg.release.canary.enabled) and any(k in kinds for k in with_live)
    if running is not None and (wants_canary or set(versions) & set(running.candidate)):
        return Outcome("held", versions, canary_id=running.canary_id,
                       reason=f"canary {running.canary_id} is running; the version stays a candidate")
    if wants_canary:
        started = canary.start(conn, cfg, versions, actor, "gates passed: " + ", ".join(versions.values()))
        return Outcome("canary", versions, canary_id=started.canary_id)
    for version in versions.values():
        make_live(conn, version)
    reason = "no canary for this path" if not canary_allowed else "no live version to compare with"
    return Outcome("live", versions, reason=reason)
