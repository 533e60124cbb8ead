"""Load a world (catalog + history) into Postgres, and derive the Redis online features from the log.

Postgres is the source of truth; Redis is rebuilt from the event log whenever its dataset marker is
missing (a restarted Redis, a new key prefix).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import datetime, timezone

import pandas as pd
import psycopg
from omegaconf import OmegaConf

from recsys.catalog.store import write_catalog
from recsys.features.event_log import COLUMNS, bestsellers, write_rows
from recsys.features.events import Event
from recsys.features.online_store import OnlineStore

log = logging.getLogger(__name__)
CHUNK = 50_000


def fingerprint(cfg) -> str:
    spec = {"data": OmegaConf.to_container(cfg.data, resolve=True), "seed": int(cfg.seed)}
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def history_end(value) -> datetime:
    if value:
        return datetime.fromisoformat(str(value))
    return datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)


def generate(cfg):
    """(catalog, events DataFrame) for the configured data source."""
    d = cfg.data
    if d.source == "synthetic":
        from recsys.sim.catalog import generate_catalog
        from recsys.sim.shoppers import ShopperWorld

        catalog = generate_catalog(n_skus=int(d.n_skus), seed=int(cfg.seed))
        world = ShopperWorld(catalog, n_users=int(d.n_users), seed=int(cfg.seed))
        return catalog, world.history(days=int(d.days), end=history_end(d.end))
    if d.source == "amazon_beauty":
        from recsys.catalog.amazon import load_beauty_catalog, load_beauty_events

        return load_beauty_catalog(d.path), load_beauty_events(d.path)
    raise ValueError(f"data.source must be synthetic or amazon_beauty, not {d.source!r}")


def _event_rows(events: pd.DataFrame):
    frame = events.reindex(columns=list(COLUMNS))
    frame = frame.astype(object).where(frame.notna(), None)
    for row in frame.itertuples(index=False):
        yield tuple(row)


def load_postgres(cfg, conn: psycopg.Connection) -> str:
    name, fp = str(cfg.data.source), fingerprint(cfg)
    row = conn.execute("SELECT fingerprint, items, events FROM datasets WHERE name = %s", (name,)).fetchone()
    if row and row[0] == fp:
        return f"{name}: {row[1]} items and {row[2]} events already loaded"
    start = time.monotonic()
    catalog, events = generate(cfg)
    generated = time.monotonic() - start
    # One world at a time: a different dataset replaces everything derived from the previous one.
    conn.execute("TRUNCATE items, item_edges, item_vectors, vector_sets, events, impressions, datasets")
    retired = _retire_models(conn, f"data load: {name} {fp} replaced the world they were trained on")
    write_catalog(conn, catalog.items, catalog.edges, name)
    logged = 0
    for begin in range(0, len(events), CHUNK):
        logged += write_rows(conn, _event_rows(events.iloc[begin:begin + CHUNK]))
        conn.execute("ANALYZE events")   # the next chunk's plan sees the partitions as they are now
    conn.execute("INSERT INTO datasets (name, fingerprint, items, events) VALUES (%s, %s, %s, %s) "
                 "ON CONFLICT (name) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, items = EXCLUDED.items, "
                 "events = EXCLUDED.events, loaded_at = now()", (name, fp, len(catalog.items), len(events)))
    return (f"{name}: generated {len(catalog.items)} items, {len(catalog.edges)} edges, {len(events)} events "
            f"in {generated:.0f} s; {logged} new events logged in {time.monotonic() - start - generated:.0f} s"
            + (f"; {retired}" if retired else ""))


def _retire_models(conn: psycopg.Connection, reason: str) -> str:
    """After a new world replaced the previous one: models trained on that world (their SKUs, users and
    vector sets are gone) stop serving and stop being compared with. A running canary is aborted, every
    live, canary or candidate version retired, so the next trained version goes live on its own instead
    of entering a canary against a model whose vectors no longer exist."""
    from recsys.release import canary as canaries

    if (running := canaries.running(conn)) is not None:
        canaries.abort(conn, running.canary_id, "data load", reason)
    n = conn.execute("UPDATE models SET stage = 'retired', updated_at = now() "
                     "WHERE stage IN ('live', 'canary', 'candidate')").rowcount
    return f"{n} models of the previous world retired" if n else ""


def rebuild_online_features(cfg, conn: psycopg.Connection, store: OnlineStore) -> str:
    """Replay the event log into Redis (idempotent per event_id), then refresh bestsellers.
    The marker names the load (fingerprint and time), so a reloaded Postgres always rebuilds Redis."""
    marker = f"{store.p}dataset"
    loaded = conn.execute("SELECT fingerprint, loaded_at FROM datasets ORDER BY loaded_at DESC LIMIT 1").fetchone()
    fp = f"{loaded[0]}@{loaded[1].isoformat()}" if loaded else fingerprint(cfg)
    if (store.r.get(marker) or b"").decode() == fp:
        return "online features already built"
    start = time.monotonic()
    store.delete_all()  # features of another dataset (or a half-finished build) must not mix in
    category_of = dict(conn.execute("SELECT sku, category FROM items").fetchall())
    applied = 0
    cols = ", ".join(c for c in COLUMNS if c not in ("surface", "request_id", "slot"))
    with conn.transaction(), conn.cursor(name="replay") as cur:
        cur.itersize = 20_000
        cur.execute(f"SELECT {cols} FROM events ORDER BY ts")
        batch = []
        for row in cur:
            values = dict(zip(cols.split(", "), row))
            values["price"] = None if values["price"] is None else float(values["price"])
            batch.append(Event.model_construct(**{k: v for k, v in values.items() if v is not None}))
            if len(batch) == 20_000:
                applied += store.apply(batch, category_of)
                batch = []
        applied += store.apply(batch, category_of)
    store.set_bestsellers(dict(bestsellers(conn, int(cfg.serve.bestseller_days))))
    store.r.set(marker, fp)
    return f"online features: {applied} events applied to Redis in {time.monotonic() - start:.0f} s"


def load_world(cfg) -> str:
    from recsys.services import Postgres

    with psycopg.connect(Postgres(cfg).dsn, autocommit=True) as conn:
        first = load_postgres(cfg, conn)
        second = rebuild_online_features(cfg, conn, OnlineStore.from_config(cfg))
    return f"{first}\n{second}"
