"""The shopper simulator: event contract, funnel, accessory attach, hidden preferences, replay."""

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from recsys.sim.catalog import generate_catalog
from recsys.sim.shoppers import EVENT_COLUMNS, EVENT_TYPES, ShopperWorld

N_USERS, DAYS = 1500, 30
END = datetime(2026, 9, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalog():
    return generate_catalog(800, seed=1)


@pytest.fixture(scope="module")
def world(catalog):
    return ShopperWorld(catalog, n_users=N_USERS, seed=1)


@pytest.fixture(scope="module")
def history(world):
    return world.history(days=DAYS)


def test_event_contract(history, catalog):
    assert list(history.columns) == EVENT_COLUMNS
    assert set(history["type"]) == set(EVENT_TYPES)
    assert history["event_id"].is_unique
    assert history["event_id"].str.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}").all()
    assert history["user_id"].str.fullmatch(r"u\d{6}").all()
    assert str(history["ts"].dt.tz) == "UTC" and history["ts"].is_monotonic_increasing
    assert history["ts"].between(pd.Timestamp(END) - pd.Timedelta(days=DAYS), pd.Timestamp(END)).all()
    assert set(history["sku"]) <= set(catalog.items["sku"])
    assert set(history["device"]) <= {"mobile", "desktop", "tablet"}
    assert history["geo"].str.fullmatch(r"US-[A-Z]{2}|[A-Z]{2}").all()
    price = catalog.items.set_index("sku")["price"]
    assert np.allclose(history["price"], price.loc[history["sku"]].to_numpy())
    assert (history["quantity"] >= 1).all()
    purchase = history["type"] == "purchase_completed"
    assert history.loc[purchase, "order_id"].notna().all() and history.loc[~purchase, "order_id"].isna().all()


def test_funnel(history):
    counts = history["type"].value_counts()
    assert 0.08 <= counts["add_to_cart"] / counts["product_viewed"] <= 0.15
    assert 0.30 <= counts["purchase_completed"] / counts["add_to_cart"] <= 0.50
    views_per_session = history[history["type"] == "product_viewed"].groupby("session_id").size()
    assert views_per_session.mean() >= 3
    carts = set(zip(*history.loc[history["type"] == "add_to_cart", ["session_id", "sku"]].T.to_numpy()))
    bought = set(zip(*history.loc[history["type"] == "purchase_completed", ["session_id", "sku"]].T.to_numpy()))
    assert bought <= carts                                   # every purchase was carted in its session


def test_default_size_would_exceed_half_a_million_events(history):
    per_user_day = len(history) / (N_USERS * DAYS)
    assert per_user_day * 20000 * 90 >= 500_000


def test_popularity_has_a_long_tail(history):
    views = history.loc[history["type"] == "product_viewed", "sku"].value_counts()
    assert views.head(len(views) // 10).sum() / views.sum() >= 0.2


def test_shoppers_come_back_for_accessories_of_devices_they_bought(history, catalog):
    kind = catalog.items.set_index("sku")["kind"]
    fits = set(zip(catalog.edges["src_sku"], catalog.edges["dst_sku"]))
    bought = history[(history["type"] == "purchase_completed") & (history["sku"].map(kind) == "device")]
    views = history[history["type"] == "product_viewed"]
    later = bought.merge(views, on="user_id", suffixes=("_device", "")).query("ts > ts_device")
    assert len(later) > 100
    share = np.mean([(d, s) in fits for d, s in zip(later["sku_device"], later["sku"])])
    other = np.random.default_rng(0).choice(bought["sku"].to_numpy(), len(later))
    baseline = np.mean([(d, s) in fits for d, s in zip(other, later["sku"])])
    assert share > 2 * baseline


def test_hidden_preferences_stay_hidden(world, history):
    assert list(world.users().columns) == ["user_id", "device", "geo"]
    assert len(world.users()) == N_USERS
    public = {k for k in vars(world) if not k.startswith("_")}
    assert public == {"catalog", "n_users", "seed", "b"}                     # b: the tunables, not tastes
    assert not any("aff" in c or "sens" in c or "owned" in c for c in history.columns)


def test_history_is_deterministic(catalog, history):
    again = ShopperWorld(catalog, n_users=N_USERS, seed=1).history(days=DAYS)
    pd.testing.assert_frame_equal(history, again)
    other = ShopperWorld(catalog, n_users=N_USERS, seed=2).history(days=DAYS)
    assert len(other) != len(history) or not other["sku"].equals(history["sku"])


def _bestsellers(history, k=12):
    return history.loc[history["type"] == "purchase_completed", "sku"].value_counts().index[:k].tolist()


def test_respond_returns_well_formed_events(catalog, history):
    world = ShopperWorld(catalog, n_users=N_USERS, seed=1)
    slate = _bestsellers(history)
    events = []
    for i in range(400):
        events += world.respond(f"u{i:06d}", slate, END, surface="home", request_id=f"r{i}")
    assert events and {e["type"] for e in events} <= set(EVENT_TYPES)
    for e in events:
        assert set(e) == set(EVENT_COLUMNS) | {"context"}
        assert e["sku"] == slate[e["context"]["slot"]]
        assert e["context"]["surface"] == "home" and e["context"]["request_id"] == f"r{int(e['user_id'][1:])}"
        assert e["ts"] >= pd.Timestamp(END) and (e["order_id"] is not None) == (e["type"] == "purchase_completed")
    clicks = [e for e in events if e["type"] == "product_viewed"]
    assert 0.01 < len(clicks) / (400 * len(slate)) < 0.5
    by_request = {}
    for e in events:
        by_request.setdefault((e["user_id"], e["sku"]), []).append(e["type"])
    for types in by_request.values():            # a cart follows a click, a purchase follows a cart
        assert types[0] == "product_viewed" and types == sorted(types, key=EVENT_TYPES.index)
    top_slot_clicks = sum(e["context"]["slot"] == 0 for e in clicks)
    assert top_slot_clicks > sum(e["context"]["slot"] == len(slate) - 1 for e in clicks)


def test_respond_prefers_better_slates(catalog, history):
    world = ShopperWorld(catalog, n_users=N_USERS, seed=1)
    rng = np.random.default_rng(0)
    skus = catalog.items["sku"].to_numpy()
    good = bad = 0
    for i in range(300):
        good += len(world.respond(f"u{i:06d}", _bestsellers(history), END, rng_seed=i))
        bad += len(world.respond(f"u{i:06d}", list(rng.choice(skus, 12, replace=False)), END, rng_seed=i))
    assert good > bad


def test_respond_is_reproducible_and_strict(catalog):
    slate = list(catalog.items["sku"][:12])
    runs = [ShopperWorld(catalog, n_users=50, seed=3).respond("u000007", slate, END, rng_seed=11) for _ in range(2)]
    assert runs[0] == runs[1]
    world = ShopperWorld(catalog, n_users=50, seed=3)
    assert world.respond("u000007", [], END) == []
    with pytest.raises(KeyError):
        world.respond("u999999", slate, END)


def test_history_window_for_any_end(world):
    end = datetime(2026, 9, 1, 14, 30, tzinfo=UTC)
    events = world.history(days=7, end=end)
    assert len(events) and events["ts"].between(pd.Timestamp(end) - pd.Timedelta(days=7), pd.Timestamp(end),
                                                inclusive="left").all()


def test_a_rail_often_gets_no_click_and_wears_out_when_repeated(catalog, history):
    """The choice model: a good rail is left alone a fair share of the time (CTR does not saturate), and
    the same rail shown again and again to the same shoppers gets fewer clicks than the first time."""
    world = ShopperWorld(catalog, n_users=N_USERS, seed=1)
    world.history(days=DAYS)
    slate = _bestsellers(history)
    users = [f"u{i:06d}" for i in range(600)]

    def ctr(day: int, offset: int) -> float:
        at = pd.Timestamp(END) + pd.Timedelta(days=day)
        return np.mean([any(e["type"] == "product_viewed" for e in world.respond(u, slate, at, rng_seed=offset + i))
                        for i, u in enumerate(users)])

    first = ctr(1, 0)
    for repeat in range(4):                        # the same rail, the same day, four more times
        last = ctr(1, 1000 * (repeat + 1))
    rested = ctr(40, 9000)                         # a month later, fatigue has worn off
    print(f"\n  CTR first {first:.3f}, fifth {last:.3f}, a month later {rested:.3f}")
    assert 0.05 < first < 0.9, first
    assert last < first - 0.05, (first, last)
    assert rested > last + 0.03, (last, rested)


def test_a_shopper_does_not_buy_the_device_just_bought_again(catalog):
    world = ShopperWorld(catalog, n_users=N_USERS, seed=1)
    world.history(days=DAYS)
    u = int(np.flatnonzero(world._n_owned > 0)[0])
    owned = world._owned[u, (world._n_owned[u] - 1) % 6]
    like = world._owned_like(u, np.array([owned]), int(pd.Timestamp(END).value))
    assert like[0] == 1.0                                    # the owned device itself, whenever bought
    accessory = int(np.flatnonzero(world._kind == "accessory")[0])
    assert world._owned_like(u, np.array([accessory]), int(pd.Timestamp(END).value))[0] == 0.0


def test_an_organic_visit_is_a_history_visit(catalog):
    world = ShopperWorld(catalog, n_users=N_USERS, seed=1)
    world.history(days=DAYS)
    at = pd.Timestamp(END) + pd.Timedelta(days=2)
    events = world.organic_visit("u000042", at, rng_seed=5, session_id="s-organic")
    again = ShopperWorld(catalog, n_users=N_USERS, seed=1)
    again.history(days=DAYS)
    assert events == again.organic_visit("u000042", at, rng_seed=5, session_id="s-organic")   # by seed
    assert events[0]["type"] == "product_viewed" and all(e["context"] is None for e in events)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events) and events[0]["ts"] >= at
    assert {e["session_id"] for e in events} == {"s-organic"}
    views = sum(e["type"] == "product_viewed" for e in events)
    assert 1 <= views <= world.b.max_views
