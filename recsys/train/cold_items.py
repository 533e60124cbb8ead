"""Day-one vectors for SKUs the live two-tower has never seen: the exported item tower (ONNX) on
content alone (ID part zero, exactly as whole-ID dropout trained it), added to the live vector set.

`recsys cold-items` runs it; the HNSW index takes the new rows as they are inserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from recsys import registry
from recsys.catalog import vectors
from recsys.catalog.embed import encode_texts
from recsys.models import SKUS_FILE
from recsys.models.two_tower import CATEGORIES_FILE, ITEM_TOWER_FILE
from recsys.train.dataset import MAX_NEIGHBORS


def _inputs(conn, rows, skus: list[str], categories: list[str], names: list[str], content_dim: int,
            model_path: str | None) -> dict[str, np.ndarray]:
    index = {sku: i for i, sku in enumerate(skus)}
    code = {c: i for i, c in enumerate(categories)}
    n = len(rows)
    out = {"ids": np.zeros(n, dtype=np.int64)}
    if "content" in names:
        text = encode_texts([r[4] or r[0] for r in rows], model_path)
        out["content"] = np.zeros((n, content_dim), dtype=np.float32)
        out["content"][:, : text.shape[1]] = text[:, :content_dim]
    if "cats" in names:  # unseen category -> code 0, price band as trained
        out["cats"] = np.array([[code.get(r[1], 0), int(r[2] or 0)] for r in rows], dtype=np.int64)
    if "numeric" in names:
        out["numeric"] = np.array([[float(r[3] or 0.0)] for r in rows], dtype=np.float32)
    if "nbrs" in names:
        nbrs = np.zeros((n, MAX_NEIGHBORS), dtype=np.int64)
        for i, r in enumerate(rows):
            known = [index[s] + 1 for (s,) in conn.execute(
                "SELECT src_sku FROM item_edges WHERE dst_sku = %s UNION SELECT dst_sku FROM item_edges "
                "WHERE src_sku = %s", (r[0], r[0])) if s in index][:MAX_NEIGHBORS]
            nbrs[i, : len(known)] = known
        out["nbrs"] = nbrs
    return out


def embed_cold_items(cfg) -> str:
    import onnxruntime as ort

    from recsys.services import Postgres

    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        register_vector(conn)
        model = registry.live(conn, "two_tower")
        live = vectors.live_version(conn, "retrieval")
        if model is None or live is None:
            return "no live two-tower model: nothing to do"
        rows = conn.execute(
            "SELECT i.sku, i.category, i.price_band, i.margin, i.spec_text FROM items i WHERE NOT EXISTS "
            "(SELECT 1 FROM item_vectors v WHERE v.model_version = %s AND v.sku = i.sku) ORDER BY i.sku",
            (live[0],)).fetchall()
        if not rows:
            return f"every SKU has a vector in {live[0]}"
        folder = Path(model.artifact_uri)
        session = ort.InferenceSession(str(folder / ITEM_TOWER_FILE), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        content_dim = next((i.shape[1] for i in session.get_inputs() if i.name == "content"), 0)
        feeds = _inputs(conn, rows, json.loads((folder / SKUS_FILE).read_text()),
                        json.loads((folder / CATEGORIES_FILE).read_text()), names, content_dim,
                        cfg.embedding.model_path)
        out = session.run(None, {name: feeds[name] for name in names})[0].astype(np.float32)
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany("INSERT INTO item_vectors (model_version, sku, embedding) VALUES (%s, %s, %s) "
                            "ON CONFLICT (model_version, sku) DO UPDATE SET embedding = EXCLUDED.embedding",
                            [(live[0], r[0], v) for r, v in zip(rows, out)])
    return f"{len(rows)} new SKUs embedded by the {model.version} item tower into {live[0]}"
