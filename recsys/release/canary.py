"""The canary state machine, in Postgres so that every process can restart without losing it.

    running (stage 0: 10%) --advance--> running (stage 1: 50%) --advance--> running (stage 2: 100%)
        --promote--> promoted          (the candidate's versions live, the control's retired)
    running --rollback--> rolled_back  (the candidate rejected; the control's versions serve everyone)
    running --abort--> aborted         (the candidate back to `candidate`; nothing changed)
    promoted --rollback--> rolled_back (the control's versions made live again)

One canary runs at a time (a unique index). Each transition is one transaction that locks the row and
checks the state and stage it expects, so two controllers (or a controller and a person) cannot both
advance a stage; each writes a `canary_log` row with who made it, why and the numbers it was made on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime

import psycopg
from omegaconf import OmegaConf

from recsys import registry

COLUMNS = ("canary_id, candidate, control, salt, stage, share, state, settings, started_at, stage_started_at, "
           "ended_at")


class CanaryError(Exception):
    """A transition refused (status: 404 nothing to act on, 409 the state does not allow it)."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


@dataclass
class Canary:
    canary_id: int
    candidate: dict          # kind -> version: what the canary arm serves on top of the control's
    control: dict            # kind -> version: the live versions when it started
    salt: str
    stage: int
    share: float
    state: str
    settings: dict
    started_at: datetime
    stage_started_at: datetime
    ended_at: datetime | None

    @property
    def canary_models(self) -> dict:
        return {**self.control, **self.candidate}

    @property
    def stages(self) -> list[float]:
        return [float(s) for s in self.settings["stages"]]

    def as_dict(self) -> dict:
        return {**asdict(self), "canary_models": self.canary_models}


def _one(conn, where: str, args: tuple, lock: bool = False) -> Canary | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM canaries WHERE {where}{' FOR UPDATE' if lock else ''}", args).fetchone()
    return Canary(*row) if row else None


def running(conn: psycopg.Connection) -> Canary | None:
    return _one(conn, "state = 'running'", ())


def latest(conn: psycopg.Connection) -> Canary | None:
    return _one(conn, "canary_id = (SELECT max(canary_id) FROM canaries)", ())


def get(conn: psycopg.Connection, canary_id: int) -> Canary:
    found = _one(conn, "canary_id = %s", (canary_id,))
    if found is None:
        raise CanaryError(f"no canary {canary_id}", 404)
    return found


def log(conn: psycopg.Connection, canary_id: int) -> list[dict]:
    rows = conn.execute("SELECT at, action, actor, stage_from, stage_to, reason, numbers FROM canary_log "
                        "WHERE canary_id = %s ORDER BY entry_id", (canary_id,)).fetchall()
    return [dict(zip(("at", "action", "actor", "stage_from", "stage_to", "reason", "numbers"), r)) for r in rows]


def _log(conn, canary_id: int, at, action: str, actor: str, stage_from, stage_to, reason: str, numbers=None):
    conn.execute("INSERT INTO canary_log (canary_id, at, action, actor, stage_from, stage_to, reason, numbers) "
                 "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                 (canary_id, at, action, actor, stage_from, stage_to, reason, json.dumps(numbers or {}, default=str)))


def _now(conn, now: datetime | None) -> datetime:
    return now or conn.execute("SELECT now()").fetchone()[0]


def start(conn: psycopg.Connection, cfg, candidate: dict[str, str], actor: str, reason: str,
          now: datetime | None = None) -> Canary:
    """A canary of `candidate` (kind -> version, each already through its gates) against the live versions."""
    settings = OmegaConf.to_container(cfg.release.canary, resolve=True)
    with conn.transaction():
        busy = running(conn)
        if busy is not None:
            raise CanaryError(f"canary {busy.canary_id} is running: finish, roll back or abort it first")
        control = {kind: rec.version for kind in cfg.release.served_kinds
                   if (rec := registry.live(conn, kind)) is not None}
        for kind, version in candidate.items():
            record = registry.get(conn, version)
            if record.kind != kind:
                raise CanaryError(f"{version} is a {record.kind}, not a {kind}", 422)
            if not (record.gates or {}).get("passed"):
                raise CanaryError(f"{version} has not passed its gates (recsys models gates {version})")
            if control.get(kind) == version:
                raise CanaryError(f"{version} is already live")
        at = _now(conn, now)
        canary_id = conn.execute(
            "INSERT INTO canaries (candidate, control, salt, share, settings, started_at, stage_started_at) "
            "VALUES (%s, %s, '', %s, %s, %s, %s) RETURNING canary_id",
            (json.dumps(candidate), json.dumps(control), settings["stages"][0], json.dumps(settings), at, at)).fetchone()[0]
        conn.execute("UPDATE canaries SET salt = %s WHERE canary_id = %s", (f"{settings['salt']}:{canary_id}", canary_id))
        for version in candidate.values():
            registry.set_stage(conn, version, "canary")
        _log(conn, canary_id, at, "start", actor, None, 0, reason, {"candidate": candidate, "control": control})
    return get(conn, canary_id)


def _locked(conn, canary_id: int, states: tuple[str, ...], stage: int | None) -> Canary:
    found = _one(conn, "canary_id = %s", (canary_id,), lock=True)
    if found is None:
        raise CanaryError(f"no canary {canary_id}", 404)
    if found.state not in states:
        raise CanaryError(f"canary {canary_id} is {found.state}")
    if stage is not None and found.stage != stage:
        raise CanaryError(f"canary {canary_id} is at stage {found.stage}, not {stage} (someone moved it)")
    return found


def advance(conn: psycopg.Connection, canary_id: int, actor: str, reason: str, numbers: dict | None = None,
            from_stage: int | None = None, now: datetime | None = None) -> Canary:
    """To the next stage's share; from the last stage, promote."""
    with conn.transaction():
        c = _locked(conn, canary_id, ("running",), from_stage)
        at = _now(conn, now)
        if c.stage + 1 >= len(c.stages):
            return _promote(conn, c, actor, reason, numbers, at)
        conn.execute("UPDATE canaries SET stage = %s, share = %s, stage_started_at = %s WHERE canary_id = %s",
                     (c.stage + 1, c.stages[c.stage + 1], at, canary_id))
        _log(conn, canary_id, at, "advance", actor, c.stage, c.stage + 1,
             f"{reason}; canary share {c.stages[c.stage]:.0%} -> {c.stages[c.stage + 1]:.0%}", numbers)
    return get(conn, canary_id)


def _promote(conn, c: Canary, actor: str, reason: str, numbers, at) -> Canary:
    from recsys.release.promote import make_live

    for version in c.candidate.values():
        make_live(conn, version)
    conn.execute("UPDATE canaries SET state = 'promoted', ended_at = %s WHERE canary_id = %s", (at, c.canary_id))
    _log(conn, c.canary_id, at, "promote", actor, c.stage, None, f"{reason}; {', '.join(c.candidate.values())} live",
         numbers)
    return get(conn, c.canary_id)


def rollback(conn: psycopg.Connection, canary_id: int, actor: str, reason: str, numbers: dict | None = None,
             now: datetime | None = None) -> Canary:
    """Everyone back on the control's versions (made live again if the canary had been promoted)."""
    from recsys.release.promote import make_live

    with conn.transaction():
        c = _locked(conn, canary_id, ("running", "promoted"), None)
        at = _now(conn, now)
        if c.state == "promoted":
            for kind in c.candidate:
                if kind in c.control:
                    make_live(conn, c.control[kind])
        for version in c.candidate.values():
            conn.execute("UPDATE models SET stage = 'rejected', updated_at = now() WHERE version = %s", (version,))
        conn.execute("UPDATE canaries SET state = 'rolled_back', ended_at = %s WHERE canary_id = %s", (at, canary_id))
        _log(conn, canary_id, at, "rollback", actor, c.stage, None, reason, numbers)
    return get(conn, canary_id)


def abort(conn: psycopg.Connection, canary_id: int, actor: str, reason: str, now: datetime | None = None,
          numbers: dict | None = None) -> Canary:
    """Stop without a verdict: the candidate goes back to `candidate`, the control keeps serving."""
    with conn.transaction():
        c = _locked(conn, canary_id, ("running",), None)
        at = _now(conn, now)
        for version in c.candidate.values():
            conn.execute("UPDATE models SET stage = 'candidate', updated_at = now() WHERE version = %s", (version,))
        conn.execute("UPDATE canaries SET state = 'aborted', ended_at = %s WHERE canary_id = %s", (at, canary_id))
        _log(conn, canary_id, at, "abort", actor, c.stage, None, reason, numbers)
    return get(conn, canary_id)
