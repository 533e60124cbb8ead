"""Day-one vectors for SKUs the live two-tower has never seen: the exported item tower (ONNX) on
content alone (ID part zero, exactly as whole-ID dropout trained it), added to the live vector set.

`recsys cold-items` runs it, through the content gates (conf/gates/content.yaml): known SKUs embedded
the same way must land near their trained vectors. The HNSW index takes the new rows as they are inserted.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
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


ITEM_ROWS = "SELECT i.sku, i.category, i.price_band, i.margin, i.spec_text FROM items i"


class ItemTower:
    """The live two-tower's exported item tower, fed content-only inputs."""

    def __init__(self, conn, folder: Path, model_path: str | None):
        import onnxruntime as ort

        self.conn, self.model_path = conn, model_path
        self.session = ort.InferenceSession(str(folder / ITEM_TOWER_FILE), providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]
        self.content_dim = next((i.shape[1] for i in self.session.get_inputs() if i.name == "content"), 0)
        self.skus = json.loads((folder / SKUS_FILE).read_text())
        self.categories = json.loads((folder / CATEGORIES_FILE).read_text())

    def feeds(self, rows) -> dict[str, np.ndarray]:
        """The tower's inputs for `rows` (the MiniLM text encoding and the accessory graph's neighbours)."""
        return _inputs(self.conn, rows, self.skus, self.categories, self.names, self.content_dim, self.model_path)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {name: feeds[name] for name in self.names})[0].astype(np.float32)

    def __call__(self, rows) -> np.ndarray:
        return self.run(self.feeds(rows))


def self_recall(conn, tower: ItemTower, live_version: str, n: int = 200, k: int = 120, seed: int = 0) -> dict:
    """The cold path measured on SKUs it knows: `n` of them embedded from content alone, as if new;
    the share whose trained vector is among the `k` nearest (cosine) of that content-only vector, the
    share of finite vectors, and the item tower's p95 per SKU (the gate's latency)."""
    skus, matrix = vectors.read_vectors(conn, live_version)
    known = [s for s in skus if s in set(tower.skus)]
    chosen = sorted(np.random.default_rng(seed).choice(known, size=min(n, len(known)), replace=False).tolist())
    rows = conn.execute(f"{ITEM_ROWS} WHERE i.sku = ANY(%s) ORDER BY i.sku", (chosen,)).fetchall()
    feeds = tower.feeds(rows)
    out = tower.run(feeds)
    took = []   # the item tower alone, one SKU at a time (the text encoding is the content set's, timed there)
    for i in range(min(len(rows), 50)):
        one = {name: value[i:i + 1] for name, value in feeds.items()}
        start = time.perf_counter()
        tower.run(one)
        took.append((time.perf_counter() - start) * 1000)
    unit = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    queries = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    position = {s: i for i, s in enumerate(skus)}
    scores = queries @ unit.T
    own = scores[np.arange(len(rows)), [position[r[0]] for r in rows]]
    hits = ((scores > own[:, None]).sum(axis=1) < k).mean() if len(rows) else 0.0
    return {f"content.self_recall@{k}": float(hits), "content.finite_vectors": float(np.isfinite(out).all(axis=1).mean()),
            "content.item_tower_p95_ms": float(np.percentile(took, 95)) if took else float("nan"),
            "content.sampled_skus": len(rows)}


def embed_cold_items(cfg) -> str:
    from recsys.release.promote import release
    from recsys.services import Postgres

    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        register_vector(conn)
        model = registry.live(conn, "two_tower")
        live = vectors.live_version(conn, "retrieval")
        if model is None or live is None:
            return "no live two-tower model: nothing to do"
        rows = conn.execute(
            f"{ITEM_ROWS} WHERE NOT EXISTS "
            "(SELECT 1 FROM item_vectors v WHERE v.model_version = %s AND v.sku = i.sku) ORDER BY i.sku",
            (live[0],)).fetchall()
        if not rows:
            return f"every SKU has a vector in {live[0]}"
        tower = ItemTower(conn, Path(model.artifact_uri), cfg.embedding.model_path)
        out = tower(rows)
        # the gate (conf/gates/content.yaml) on known SKUs embedded as if new, and on these vectors
        metrics = self_recall(conn, tower, live[0])
        metrics["content.finite_vectors"] = min(metrics["content.finite_vectors"], float(np.isfinite(out).all(axis=1).mean()))
        version = f"cold-items-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
        registry.register(conn, version, "content", model.artifact_uri,
                          {"two_tower": model.version, "vector_set": live[0], "skus": len(rows)}, metrics)
        outcome = release(conn, cfg, {"content": version}, "cold-items", canary_allowed=False)
        if outcome.action != "live":
            return f"{len(rows)} new SKUs not embedded: {outcome.line()}"
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany("INSERT INTO item_vectors (model_version, sku, embedding) VALUES (%s, %s, %s) "
                            "ON CONFLICT (model_version, sku) DO UPDATE SET embedding = EXCLUDED.embedding",
                            [(live[0], r[0], v) for r, v in zip(rows, out)])
    return (f"{len(rows)} new SKUs embedded by the {model.version} item tower into {live[0]} "
            f"(gates passed: self-recall@120 {metrics['content.self_recall@120']:.2f})")
