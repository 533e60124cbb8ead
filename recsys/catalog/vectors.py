"""Item vectors in pgvector: write a vector set, index it with HNSW, switch the live set, search it.

Each vector set (a model version) has its own partial HNSW index on a cast to its dimension, so a
new set is built beside the live one and becomes live in one UPDATE; the old set stays (state
'ready') until it is retired.
"""

from __future__ import annotations

import re

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

VERSION_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
TABLE = "item_vectors"


def _checked(version: str) -> str:
    if not VERSION_PATTERN.match(version):
        raise ValueError(f"model_version {version!r} must match {VERSION_PATTERN.pattern}")
    return version


def index_name(version: str) -> str:
    return "item_vectors_hnsw_" + re.sub(r"[^a-z0-9]+", "_", version.lower())[:40]


def write_vectors(conn: psycopg.Connection, version: str, purpose: str, skus: list[str], vectors: np.ndarray,
                  m: int = 16, ef_construction: int = 128) -> None:
    """Replace the rows of `version`, then build its HNSW index; the set ends in state 'ready'."""
    register_vector(conn)
    version = _checked(version)
    dim = int(vectors.shape[1])
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("INSERT INTO vector_sets (model_version, purpose, dim, state) VALUES (%s, %s, %s, 'building') "
                    "ON CONFLICT (model_version) DO UPDATE SET dim = EXCLUDED.dim, "
                    "state = CASE WHEN vector_sets.state = 'live' THEN 'live' ELSE 'building' END",
                    (version, purpose, dim))
        cur.execute("DELETE FROM item_vectors WHERE model_version = %s", (version,))
        with cur.copy("COPY item_vectors (model_version, sku, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["text", "text", "vector"])
            for sku, vec in zip(skus, vectors.astype(np.float32)):
                copy.write_row((version, sku, vec))
    name = create_index(conn, version, dim, m, ef_construction)
    conn.execute("ANALYZE item_vectors")
    conn.execute("UPDATE vector_sets SET index_name = %s, "
                 "state = CASE WHEN state = 'live' THEN 'live' ELSE 'ready' END WHERE model_version = %s",
                 (name, version))
    if not conn.autocommit:
        conn.commit()


def create_index(conn: psycopg.Connection, version: str, dim: int, m: int, ef_construction: int,
                 table: str = TABLE, name: str | None = None) -> str:
    """(Re)build the partial HNSW index of one set in `table` (item_vectors, or a scratch copy with its
    columns: recsys/bench/ann.py); returns the index name."""
    version, name = _checked(version), name or index_name(version)
    conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(name)))
    conn.execute(sql.SQL(
        "CREATE INDEX {name} ON {table} USING hnsw ((embedding::vector({dim})) vector_cosine_ops) "
        "WITH (m = {m}, ef_construction = {ef}) WHERE model_version = {version}").format(
        name=sql.Identifier(name), table=sql.Identifier(table), dim=sql.Literal(dim), m=sql.Literal(int(m)),
        ef=sql.Literal(int(ef_construction)), version=sql.Literal(version)))
    return name


def index_params(conn: psycopg.Connection, name: str) -> dict[str, int]:
    """The build parameters of an existing HNSW index ({} when it does not exist); pgvector's defaults
    (m 16, ef_construction 64) where the index was built without them."""
    row = conn.execute("SELECT c.reloptions FROM pg_class c WHERE c.relname = %s AND c.relkind = 'i'",
                       (name,)).fetchone()
    if row is None:
        return {}
    params = {"m": 16, "ef_construction": 64}
    for option in row[0] or []:
        key, _, value = option.partition("=")
        params[key] = int(value)
    return params


def hnsw_params(embedding_cfg, purpose: str) -> tuple[int, int, int]:
    """(m, ef_construction, ef_search) for a set of this purpose: `embedding.<purpose>_hnsw` where the
    config has it (the two-tower set: `retrieval_hnsw`), else `embedding.hnsw_*` (the content set)."""
    default = (int(embedding_cfg.hnsw_m), int(embedding_cfg.hnsw_ef_construction), int(embedding_cfg.hnsw_ef_search))
    own = embedding_cfg.get(f"{purpose}_hnsw") if hasattr(embedding_cfg, "get") else None
    if not own:
        return default
    return (int(own.get("m", default[0])), int(own.get("ef_construction", default[1])),
            int(own.get("ef_search", default[2])))


def make_live(conn: psycopg.Connection, version: str) -> None:
    """Atomically switch the live set of this version's purpose to `version`."""
    with conn.transaction():
        row = conn.execute("SELECT purpose, state FROM vector_sets WHERE model_version = %s FOR UPDATE",
                           (version,)).fetchone()
        if row is None or row[1] not in ("ready", "live"):
            raise ValueError(f"vector set {version!r} is not ready (state: {row[1] if row else 'missing'})")
        conn.execute("UPDATE vector_sets SET state = 'ready' WHERE purpose = %s AND state = 'live'", (row[0],))
        conn.execute("UPDATE vector_sets SET state = 'live' WHERE model_version = %s", (version,))


def retire(conn: psycopg.Connection, version: str) -> None:
    """Drop a non-live set's index and rows."""
    with conn.transaction():
        state = conn.execute("SELECT state FROM vector_sets WHERE model_version = %s", (version,)).fetchone()
        if state and state[0] == "live":
            raise ValueError(f"vector set {version!r} is live: make another one live first")
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(index_name(version))))
        conn.execute("DELETE FROM item_vectors WHERE model_version = %s", (version,))
        conn.execute("UPDATE vector_sets SET state = 'retired' WHERE model_version = %s", (version,))


def live_version(conn: psycopg.Connection, purpose: str) -> tuple[str, int] | None:
    row = conn.execute("SELECT model_version, dim FROM vector_sets WHERE purpose = %s AND state = 'live'",
                       (purpose,)).fetchone()
    return (row[0], row[1]) if row else None


def read_vectors(conn: psycopg.Connection, version: str) -> tuple[list[str], np.ndarray]:
    register_vector(conn)
    rows = conn.execute("SELECT sku, embedding FROM item_vectors WHERE model_version = %s ORDER BY sku",
                        (version,)).fetchall()
    if not rows:
        return [], np.zeros((0, 0), dtype=np.float32)
    return [r[0] for r in rows], np.stack([r[1].to_numpy().astype(np.float32) for r in rows])


def prepare(conn: psycopg.Connection, ef_search: int | None = None) -> None:
    """Once per connection, not per query: teach psycopg the vector types (four catalog lookups) and
    set how many candidates an HNSW search keeps (it returns at most that many: keep it >= k)."""
    register_vector(conn)
    if ef_search is not None:
        set_ef_search(conn, ef_search)


def set_ef_search(conn: psycopg.Connection, ef_search: int) -> None:
    conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(int(ef_search))))


def search_sql(version: str, dim: int, table: str = TABLE) -> sql.Composed:
    """The nearest-neighbour query for one set. Version and dim are literals so that the planner can
    match the partial expression index (a parameter would hide the predicate in a generic plan).
    The query vector travels in binary: formatting 384 floats as text costs more than the search."""
    cast = sql.SQL("embedding::vector({})").format(sql.Literal(dim))
    return sql.SQL(
        "SELECT sku, 1 - ({cast} <=> %(q)b::vector({dim})) AS score FROM {table} "
        "WHERE model_version = {version} ORDER BY {cast} <=> %(q)b::vector({dim}) LIMIT %(k)s").format(
        cast=cast, dim=sql.Literal(dim), table=sql.Identifier(table), version=sql.Literal(_checked(version)))


def search(conn: psycopg.Connection, version: str, dim: int, query: np.ndarray, k: int,
           table: str = TABLE) -> list[tuple[str, float]]:
    """Top-k (sku, cosine similarity) through the HNSW index, in one round trip on a connection that
    went through `prepare`."""
    return conn.execute(search_sql(version, dim, table), {"q": np.asarray(query, dtype=np.float32), "k": k}).fetchall()
