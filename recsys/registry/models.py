"""Register a trained model, move it between stages, and find the live one per kind.

Stages: candidate (just trained) -> canary -> live -> retired, or rejected when its release gates
refuse it (recsys/release/gates.py; the report is kept in `gates`). Making a version live retires the
previous live version of the same kind in the same transaction. Only recsys/release/promote.py makes a
version live, after its gates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import psycopg

STAGES = ("candidate", "rejected", "canary", "live", "retired")


@dataclass
class ModelRecord:
    version: str
    kind: str
    config: dict
    metrics: dict
    artifact_uri: str
    stage: str
    created_at: datetime
    gates: dict | None = None     # the last gate report (recsys/release/gates.py), None before any


_COLUMNS = "version, kind, config, metrics, artifact_uri, stage, created_at, gates"


def register(conn: psycopg.Connection, version: str, kind: str, artifact_uri: str, config: dict | None = None,
             metrics: dict | None = None) -> ModelRecord:
    conn.execute(
        "INSERT INTO models (version, kind, config, metrics, artifact_uri) VALUES (%s, %s, %s, %s, %s)",
        (version, kind, json.dumps(config or {}, default=str), json.dumps(metrics or {}), artifact_uri))
    return get(conn, version)


def get(conn: psycopg.Connection, version: str) -> ModelRecord:
    row = conn.execute(f"SELECT {_COLUMNS} FROM models WHERE version = %s", (version,)).fetchone()
    if row is None:
        raise KeyError(f"no model version {version!r}")
    return ModelRecord(*row)


def live(conn: psycopg.Connection, kind: str) -> ModelRecord | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM models WHERE kind = %s AND stage = 'live'", (kind,)).fetchone()
    return ModelRecord(*row) if row else None


def list_models(conn: psycopg.Connection, kind: str | None = None) -> list[ModelRecord]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM models WHERE %s::text IS NULL OR kind = %s ORDER BY created_at",
                        (kind, kind)).fetchall()
    return [ModelRecord(*r) for r in rows]


def set_stage(conn: psycopg.Connection, version: str, stage: str) -> ModelRecord:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
    with conn.transaction():
        record = get(conn, version)
        if stage == "live":
            conn.execute("UPDATE models SET stage = 'retired', updated_at = now() "
                         "WHERE kind = %s AND stage = 'live' AND version <> %s", (record.kind, version))
        conn.execute("UPDATE models SET stage = %s, updated_at = now() WHERE version = %s", (stage, version))
    return get(conn, version)


def set_gates(conn: psycopg.Connection, version: str, report: dict) -> None:
    """Store a gate report beside the version's metrics; a failed report rejects a candidate."""
    conn.execute("UPDATE models SET gates = %s, updated_at = now(), stage = CASE WHEN %s AND stage = "
                 "'candidate' THEN 'rejected' ELSE stage END WHERE version = %s",
                 (json.dumps(report, default=str), not report["passed"], version))
