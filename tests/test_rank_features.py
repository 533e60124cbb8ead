"""The 28 ranking features: one definition, point-in-time correct offline, equal online and offline."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest

from tests.conftest import make_cfg
from recsys.rank.features import FEATURES, NAMES, SCORE_COLUMNS, feature_table
from recsys.rank.offline import EventLog, OfflineRetrieval, build_lists, features_at


@pytest.fixture(scope="module")
def small():
    """The small synthetic world as frames (no services needed)."""
    from recsys.data import generate
    from recsys.rank.features import ItemTable

    cfg = make_cfg("ranker.max_requests=400")
    catalog, events = generate(cfg)
    return cfg, ItemTable.from_frames(catalog.items, catalog.edges), events


def test_28_named_features_defined_once():
    assert len(FEATURES) == 28 and len(NAMES) == 28 and len(set(NAMES)) == 28
    table = feature_table()
    assert list(table["name"]) == list(NAMES) and table["meaning"].str.len().min() > 5


def test_lists_have_28_numeric_columns_and_graded_labels(small):
    cfg, items, events = small
    lists = build_lists(events, items, cfg.features, cfg.ranker)
    assert lists.X.shape == (lists.group.sum(), 28) and lists.X.dtype == np.float64
    assert lists.group.max() <= int(cfg.ranker.max_candidates)
    assert set(np.unique(lists.y)) <= {0, 1, 2, 3} and (lists.y > 0).any()
    assert lists.meta["valid"].any() and (~lists.meta["valid"]).any()
    assert np.all(np.diff(lists.meta["t"]) >= 0)                      # lists in time order


def test_an_event_after_t_never_changes_features_at_t(small):
    cfg, items, events = small
    log = EventLog(events, items, cfg.features)
    retrieval = OfflineRetrieval(items, dict(cfg.ranker.quotas), int(cfg.ranker.max_candidates))
    windows = list(cfg.features.counter_windows_h)
    rows = np.flatnonzero(log.type == "product_viewed")
    row = int(rows[len(rows) // 2])
    user, t = log.user[row], float(log.t[row])
    ctx, before = features_at(log, retrieval, row, "pdp_fbt", windows)
    assert ctx is not None and len(ctx.candidates) > 10
    # The same user buys, carts and views candidates (and the page SKU) just after t; others too.
    ts = pd.Timestamp(t, unit="s", tz="UTC")
    future = pd.DataFrame([
        {"event_id": f"future-{i}", "type": typ, "user_id": uid, "session_id": "s-future", "sku": sku,
         "ts": ts + timedelta(seconds=1 + i), "device": "tablet", "order_id": "o" if typ[0] == "p" else None}
        for i, (typ, uid, sku) in enumerate(
            [(ty, u, s) for s in ctx.candidates[:5] + [log.sku[row]] for u in (user, "someone-else")
             for ty in ("product_viewed", "add_to_cart", "purchase_completed")])])
    log2 = EventLog(pd.concat([events, future], ignore_index=True), items, cfg.features)
    row2 = int(np.flatnonzero((log2.user == user) & (log2.t == t) & (log2.sku == log.sku[row]))[0])
    ctx2, after = features_at(log2, retrieval, row2, "pdp_fbt", windows)
    assert ctx2.candidates == ctx.candidates
    np.testing.assert_array_equal(after, before)


def test_online_features_equal_offline_features(stack):
    """Redis (OnlineStore.user_state / item_counters at t) + Postgres catalog == the event log at t."""
    import redis

    from tests.conftest import PREFIX
    from recsys.data import load_world
    from recsys.features.events import Event
    from recsys.features.online_store import OnlineStore
    from recsys.rank.features import ItemTable
    from recsys.rank.offline import _epoch
    from recsys.rank.online import OnlineFeatures
    from recsys.rank.train import read_log
    from recsys.serve.request import Pooled, RecRequest
    from recsys.services import Postgres

    cfg = make_cfg("ranker.max_requests=300")
    load_world(stack)
    with psycopg.connect(Postgres(stack).dsn, autocommit=True) as conn:
        items = ItemTable.from_postgres(conn)
        events = read_log(conn)
        category_of = dict(conn.execute("SELECT sku, category FROM items").fetchall())
    lists = build_lists(events, items, cfg.features, cfg.ranker)
    meta = lists.meta
    # A few requests spread over time, from users with some history, both surfaces.
    picks = [int(i) for i in np.linspace(len(meta) // 3, len(meta) - 1, 4)]
    picks.append(int(meta.index[meta["surface"] == "homepage_hero"][-1]))
    store = OnlineStore(redis.Redis.from_url(cfg.services.redis.url), f"{PREFIX}parity:", cfg.features)
    store.delete_all()
    event_t = _epoch(events["ts"])
    order = np.argsort(event_t, kind="stable")
    applied, compared = 0, []
    off = lists.offsets
    try:
        for i in sorted(picks, key=lambda i: meta.at[i, "t"]):
            t = float(meta.at[i, "t"])
            upto = int(np.searchsorted(event_t[order], t, side="left"))
            batch = [Event.model_construct(**{k: v for k, v in r.items() if v is not None and v == v})
                     for r in events.iloc[order[applied:upto]].to_dict("records")]
            store.apply(batch, category_of)
            applied = upto
            rows = slice(off[i], off[i + 1])
            pooled = [Pooled(sku=s, source="blend", scores={c.removeprefix("score_"): float(v)
                                                            for c, v in zip(SCORE_COLUMNS, src) if v == v})
                      for s, src in zip(lists.skus[rows], lists.source_scores[rows])]
            page = meta.at[i, "page_sku"]
            req = RecRequest(surface=meta.at[i, "surface"], user_id=meta.at[i, "user_id"],
                             skus=[page] if page else [], device=meta.at[i, "device"])
            user = store.user_state(req.user_id, now=t)
            online = OnlineFeatures(store, items).matrix(req, user, pooled, now=t)
            np.testing.assert_allclose(online, lists.X[rows], rtol=1e-6, atol=1e-9, equal_nan=True,
                                       err_msg=f"request {i} ({req.surface}, {req.user_id} at {t})")
            compared.append(online)
        assert applied > 100
        both = np.vstack(compared)        # the comparison covered user state and counters, not just NaNs
        for name in ("category_affinity", "brand_affinity", "price_vs_user", "views_7d", "carts_7d"):
            assert np.nanmax(both[:, NAMES.index(name)]) > 0, name
    finally:
        store.delete_all()
