"""Realistic request paths for load tests: known and unknown users, real SKUs and carts."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import numpy as np
import psycopg

from recsys.serve.request import RecRequest

UNKNOWN_USER_SHARE = 0.1


def sample_paths(conn: psycopg.Connection, surface: str, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    users = [r[0] for r in conn.execute(
        "SELECT user_id FROM (SELECT DISTINCT user_id FROM events) u ORDER BY md5(user_id || %s) LIMIT %s",
        (str(seed), n)).fetchall()]
    devices = [r[0] for r in conn.execute("SELECT DISTINCT src_sku FROM item_edges ORDER BY src_sku").fetchall()]
    if not devices:
        devices = [r[0] for r in conn.execute("SELECT sku FROM items ORDER BY sku LIMIT 2000").fetchall()]
    paths = []
    for i in range(n):
        user = users[i % len(users)] if users and rng.random() > UNKNOWN_USER_SHARE else f"new-{seed}-{i}"
        path = f"/v1/recommendations/{surface}?user_id={user}"
        if surface == "pdp_fbt":
            path += f"&sku={devices[rng.integers(len(devices))]}"
        elif surface == "cart_upsell":
            cart = rng.choice(len(devices), size=int(rng.integers(1, 3)), replace=False)
            path += "&cart=" + ",".join(devices[j] for j in cart)
        paths.append(path)
    return paths


def request_of(path: str) -> RecRequest:
    """The RecRequest a sampled path asks for, as the HTTP API would parse it (for in-process runs)."""
    url = urlsplit(path)
    q = {k: v[0] for k, v in parse_qs(url.query).items()}
    skus, cart = ([s for s in q.get(key, "").split(",") if s] for key in ("sku", "cart"))
    return RecRequest(surface=url.path.rsplit("/", 1)[-1], user_id=q.get("user_id"), session_id=q.get("session_id"),
                      skus=skus, cart=cart, device=q.get("device"), geo=q.get("geo"), k=int(q.get("k", 12)))
