"""API keys in Postgres. A key is `rk_<role>_<random>`: 256 random bits, so a plain sha256 is a safe
hash (no salt or slow hash needed, unlike passwords). Only that hash and a short prefix (to recognise a
key in lists and revoke it) are stored; the clear key is shown once, when it is created."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import psycopg

from recsys.auth.roles import ROLES

PREFIX_CHARS = 8  # random characters kept in the displayed prefix (48 bits: unique in practice, not a secret)


@dataclass(frozen=True)
class ApiKey:
    key_id: int
    prefix: str
    role: str
    name: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def as_dict(self) -> dict:
        return {"key_id": self.key_id, "prefix": self.prefix, "role": self.role, "name": self.name,
                "created_at": self.created_at.isoformat(),
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}


COLUMNS = "key_id, prefix, role, name, created_at, revoked_at"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(conn: psycopg.Connection, role: str, name: str = "") -> tuple[ApiKey, str]:
    """A new key of `role`: returns its record and the clear key (which nothing keeps)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    key = f"rk_{role}_{secrets.token_urlsafe(32)}"
    prefix = key[: len(f"rk_{role}_") + PREFIX_CHARS]
    row = conn.execute(f"INSERT INTO api_keys (prefix, hash, role, name) VALUES (%s, %s, %s, %s) RETURNING {COLUMNS}",
                       (prefix, hash_key(key), role, name)).fetchone()
    return ApiKey(*row), key


def find_key(conn: psycopg.Connection, key: str) -> ApiKey | None:
    """The record of a presented clear key (revoked ones included), or None when unknown."""
    row = conn.execute(f"SELECT {COLUMNS} FROM api_keys WHERE hash = %s", (hash_key(key),)).fetchone()
    return ApiKey(*row) if row else None


def list_keys(conn: psycopg.Connection, include_revoked: bool = True) -> list[ApiKey]:
    where = "" if include_revoked else " WHERE revoked_at IS NULL"
    return [ApiKey(*row) for row in conn.execute(f"SELECT {COLUMNS} FROM api_keys{where} ORDER BY key_id")]


def revoke_key(conn: psycopg.Connection, id_or_prefix: str) -> ApiKey:
    """Revoke one key by its id or its displayed prefix; an unknown or ambiguous one is a LookupError.
    Revoking twice keeps the first revocation time."""
    column = "key_id" if str(id_or_prefix).isdigit() else "prefix"
    value = int(id_or_prefix) if column == "key_id" else str(id_or_prefix)
    rows = conn.execute(f"SELECT key_id FROM api_keys WHERE {column} = %s", (value,)).fetchall()
    if len(rows) != 1:
        raise LookupError(f"{'no' if not rows else len(rows)} keys match {id_or_prefix!r}")
    row = conn.execute(f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = %s "
                       f"RETURNING {COLUMNS}", (rows[0][0],)).fetchone()
    return ApiKey(*row)
