"""Rule set versions in Postgres (migration 007): create, shadow, publish, roll back, archive.

Versions are immutable (a trigger refuses a changed body); only the state moves:
draft -> shadow -> live -> archived (a draft may be published without a shadow run). One set is live
and one in shadow at a time, for every surface (a rule names the surfaces it applies on). Every
transition is one transaction under an advisory lock, and writes an audit row: who (the key's
identity), what (a JSON Patch against the set it replaces), when. Serving replicas poll `states()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import jsonpatch
import psycopg
from psycopg.types.json import Jsonb

LOCK_KEY = 7_424_243


class RuleSetError(Exception):
    """A transition that the version's state does not allow (HTTP 409), or an unknown version (404)."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


def label(version: int | None) -> str | None:
    """How a response names a rule set version."""
    return None if version is None else f"rules-v{version}"


@dataclass(frozen=True)
class StoredRuleSet:
    version: int
    name: str
    state: str
    body: dict
    based_on: int | None
    created_by: str
    created_at: datetime
    state_changed_at: datetime

    def summary(self) -> dict:
        return {"version": self.version, "label": label(self.version), "name": self.name, "state": self.state,
                "rules": len(self.body.get("rules", [])), "based_on": self.based_on, "created_by": self.created_by,
                "created_at": self.created_at.isoformat(), "state_changed_at": self.state_changed_at.isoformat()}

    def as_dict(self) -> dict:
        return {**self.summary(), "body": self.body}


COLUMNS = "version, name, state, body, based_on, created_by, created_at, state_changed_at"


def _row(row) -> StoredRuleSet:
    return StoredRuleSet(*row)


def get(conn: psycopg.Connection, version: int) -> StoredRuleSet:
    row = conn.execute(f"SELECT {COLUMNS} FROM rule_sets WHERE version = %s", (version,)).fetchone()
    if row is None:
        raise RuleSetError(f"no rule set version {version}", 404)
    return _row(row)


def in_state(conn: psycopg.Connection, state: str) -> StoredRuleSet | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM rule_sets WHERE state = %s", (state,)).fetchone()
    return _row(row) if row else None


def states(conn: psycopg.Connection) -> dict[str, int]:
    """{'live': version, 'shadow': version} for the sets in those states (what replicas poll)."""
    return dict(conn.execute("SELECT state, version FROM rule_sets WHERE state IN ('live', 'shadow')").fetchall())


def list_sets(conn: psycopg.Connection, limit: int = 200) -> list[StoredRuleSet]:
    rows = conn.execute(f"SELECT {COLUMNS} FROM rule_sets ORDER BY version DESC LIMIT %s", (limit,)).fetchall()
    return [_row(r) for r in rows]


def audit_log(conn: psycopg.Connection, version: int | None = None, limit: int = 200) -> list[dict]:
    where, args = ("WHERE version = %s", (version, limit)) if version is not None else ("", (limit,))
    rows = conn.execute(f"SELECT id, at, actor, action, version, detail FROM rule_audit {where} "
                        "ORDER BY id DESC LIMIT %s", args).fetchall()
    return [{"id": i, "at": at.isoformat(), "actor": actor, "action": action, "version": v, "detail": detail}
            for i, at, actor, action, v, detail in rows]


def diff(old: dict | None, new: dict | None) -> list[dict]:
    """A JSON Patch (RFC 6902) that turns `old` into `new` (an empty document for None)."""
    return jsonpatch.make_patch(old or {}, new or {}).patch


def _audit(conn, actor: str, action: str, version: int | None, **detail) -> None:
    conn.execute("INSERT INTO rule_audit (actor, action, version, detail) VALUES (%s, %s, %s, %s)",
                 (actor, action, version, Jsonb(detail)))


def _move(conn, version: int, state: str) -> None:
    conn.execute("UPDATE rule_sets SET state = %s, state_changed_at = now() WHERE version = %s", (state, version))


def create(conn: psycopg.Connection, body: dict, actor: str, based_on: int | None = None) -> StoredRuleSet:
    """A new draft (validate `body` first: recsys/rules/schema.py). The audit's diff is against
    `based_on`, or the live set when not given."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        base = get(conn, based_on) if based_on is not None else in_state(conn, "live")
        version = conn.execute("INSERT INTO rule_sets (name, body, based_on, created_by) VALUES (%s, %s, %s, %s) "
                               "RETURNING version", (body["name"], Jsonb(body), base.version if base else None,
                                                     actor)).fetchone()[0]
        _audit(conn, actor, "create", version, to_state="draft", against=base.version if base else None,
               diff=diff(base.body if base else None, body))
        return get(conn, version)


def shadow(conn: psycopg.Connection, version: int, actor: str) -> StoredRuleSet:
    """Run a draft in shadow (the set in shadow before goes back to draft)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        target = get(conn, version)
        if target.state != "draft":
            raise RuleSetError(f"version {version} is {target.state}: only a draft can go into shadow")
        before = in_state(conn, "shadow")
        if before is not None:
            _move(conn, before.version, "draft")
            _audit(conn, actor, "unshadow", before.version, from_state="shadow", to_state="draft",
                   replaced_by=version)
        live = in_state(conn, "live")
        _move(conn, version, "shadow")
        _audit(conn, actor, "shadow", version, from_state="draft", to_state="shadow",
               against=live.version if live else None, diff=diff(live.body if live else None, target.body))
        return get(conn, version)


def publish(conn: psycopg.Connection, version: int, actor: str) -> StoredRuleSet:
    """Make a draft or the shadow set live, in one transaction; the live set before is archived."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        target = get(conn, version)
        if target.state not in ("draft", "shadow"):
            raise RuleSetError(f"version {version} is {target.state}: only a draft or the shadow set can be published")
        live = in_state(conn, "live")
        if live is not None:
            _move(conn, live.version, "archived")
        _move(conn, version, "live")
        conn.execute("INSERT INTO rule_publications (version, action, published_by) VALUES (%s, 'publish', %s)",
                     (version, actor))
        _audit(conn, actor, "publish", version, from_state=target.state, to_state="live",
               replaced=live.version if live else None, diff=diff(live.body if live else None, target.body))
        return get(conn, version)


def rollback(conn: psycopg.Connection, actor: str) -> StoredRuleSet:
    """The version live before the current one becomes live again (the current one is archived)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        live = in_state(conn, "live")
        if live is None:
            raise RuleSetError("no rule set is live: nothing to roll back")
        row = conn.execute("SELECT version FROM rule_publications WHERE version <> %s AND id < "
                           "(SELECT max(id) FROM rule_publications WHERE version = %s) ORDER BY id DESC LIMIT 1",
                           (live.version, live.version)).fetchone()
        if row is None:
            raise RuleSetError(f"version {live.version} is the first live set: archive it to serve without rules")
        previous = get(conn, row[0])   # archived when it was replaced: only drafts enter shadow
        _move(conn, live.version, "archived")
        _move(conn, previous.version, "live")
        conn.execute("INSERT INTO rule_publications (version, action, published_by) VALUES (%s, 'rollback', %s)",
                     (previous.version, actor))
        _audit(conn, actor, "rollback", previous.version, from_state=previous.state, to_state="live",
               replaced=live.version, diff=diff(live.body, previous.body))
        return get(conn, previous.version)


def archive(conn: psycopg.Connection, version: int, actor: str) -> StoredRuleSet:
    """Retire a version; archiving the live set leaves serving without rules."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        target = get(conn, version)
        if target.state == "archived":
            raise RuleSetError(f"version {version} is already archived")
        _move(conn, version, "archived")
        _audit(conn, actor, "archive", version, from_state=target.state, to_state="archived")
        return get(conn, version)
