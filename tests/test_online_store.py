"""The Redis online store: what one event changes, decay over time, and idempotency by event_id."""

import math
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from recsys.features.events import Event
from recsys.features.online_store import OnlineStore

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
CATEGORY = {"P1": "phone", "C1": "phone_case", "C2": "phone_case"}


@pytest.fixture
def store(stack):
    s = OnlineStore.from_config(stack, prefix=f"{stack.services.redis.key_prefix}store-{uuid.uuid4().hex[:6]}:")
    yield s
    s.delete_all()


def ev(kind, sku, minutes=0, **kw):
    extra = {"order_id": "o1"} if kind == "purchase_completed" else {}
    return Event(type=kind, user_id="u1", sku=sku, ts=T0 + timedelta(minutes=minutes), **extra, **kw)


def test_session_cart_purchases_and_affinity(store):
    events = [ev("product_viewed", "P1", 0, device="mobile", geo="GB", session_id="s1"),
              ev("product_viewed", "C1", 1), ev("add_to_cart", "C1", 2), ev("add_to_cart", "C2", 3),
              ev("purchase_completed", "C1", 4)]
    assert store.apply(events, CATEGORY) == 5
    now = (T0 + timedelta(minutes=5)).timestamp()
    user = store.user_state("u1", now=now)
    assert [sku for sku, _ in user.views] == ["C1", "P1"]           # newest first
    assert user.device == "mobile" and user.geo == "GB" and user.session_id == "s1"  # later events lack them
    assert user.cart == {"C2"}                                      # C1 was bought
    assert set(user.purchased) == {"C1"}
    w = store.weights
    assert user.category_affinity["phone_case"] == pytest.approx(
        w["product_viewed"] + 2 * w["add_to_cart"] + w["purchase_completed"], rel=1e-3)
    assert user.known and not store.user_state("nobody").known


def test_counters_decay_with_their_window(store):
    store.apply([ev("product_viewed", "P1", 0), ev("product_viewed", "P1", 0)], CATEGORY)
    one_hour_later = (T0 + timedelta(hours=1)).timestamp()
    counters = store.item_counters(["P1"], now=one_hour_later)["P1"]
    assert counters["product_viewed:1h"] == pytest.approx(2 * math.exp(-1), rel=1e-6)
    assert counters["product_viewed:24h"] == pytest.approx(2 * math.exp(-1 / 24), rel=1e-6)
    half_life = store.aff_tau * math.log(2)
    later = store.user_state("u1", now=T0.timestamp() + half_life)
    assert later.category_affinity["phone"] == pytest.approx(2 * store.weights["product_viewed"] / 2, rel=1e-6)


def test_counter_matrix_reads_what_item_counters_reads(store):
    """The serving read (one script call) equals the general one, 0 for an unseen SKU or field."""
    store.apply([ev("product_viewed", "P1", 0), ev("add_to_cart", "P1", 5), ev("product_viewed", "C1", 9)], CATEGORY)
    now = (T0 + timedelta(hours=3)).timestamp()
    keys = ["product_viewed:24h", "add_to_cart:168h", "purchase_completed:168h"]
    skus = ["P1", "never-seen", "C1"]
    matrix = store.counter_matrix(skus, keys, now=now)
    counters = store.item_counters(skus, now=now)
    expected = [[counters[s].get(k, 0.0) for k in keys] for s in skus]
    assert matrix.shape == (3, 3) and matrix[0, 0] > 0 and matrix[0, 1] > 0 and matrix[2, 1] == 0
    np.testing.assert_allclose(matrix, expected, rtol=1e-12)
    assert store.counter_matrix([], keys).shape == (0, 3)


def test_trending_orders_by_decayed_activity_even_out_of_order(store):
    # C2 had more activity, but long ago; P1 a little, recently. Events arrive out of order.
    old = [ev("product_viewed", "C2", -600 * 60 + i) for i in range(10)]
    recent = [ev("product_viewed", "P1", -5), ev("add_to_cart", "P1", -4)]
    store.apply(recent + old, CATEGORY)
    top = store.trending(2, now=T0.timestamp())
    assert [sku for sku, _ in top] == ["P1", "C2"]
    assert top[0][1] == pytest.approx(sum(store.weights[t] * math.exp(-m * 60 / 86400) for t, m in
                                          (("product_viewed", 5), ("add_to_cart", 4))), rel=1e-6)


def test_replaying_events_changes_nothing(store):
    events = [ev("product_viewed", "P1", i) for i in range(5)] + [ev("add_to_cart", "P1", 6)]
    assert store.apply(events, CATEGORY) == 6
    before = store.user_state("u1", now=T0.timestamp()), store.item_counters(["P1"], now=T0.timestamp())
    assert store.apply(events, CATEGORY) == 0
    after = store.user_state("u1", now=T0.timestamp()), store.item_counters(["P1"], now=T0.timestamp())
    assert before == after


def test_no_user_id_reaches_another_users_keys(store):
    """Ids that spell key syntax stay inside their own escaped hash tag."""
    store.apply([ev("product_viewed", "P1", 0, device="mobile")], CATEGORY)
    before = store.user_state("u1", now=T0.timestamp())
    hostile = ["u1:views", "u1}:views", "{u1}", "u1%7D", "u1:cart", "u1}", "u1:vec"]
    events = [Event(type="add_to_cart", user_id=h, sku="C1", ts=T0 + timedelta(minutes=1)) for h in hostile]
    assert store.apply(events, CATEGORY) == len(hostile)
    assert store.user_state("u1", now=T0.timestamp()) == before
    keys = {store.user_key(h) for h in hostile} | {store.user_key("u1")}
    assert len(keys) == len(hostile) + 1
    for h in hostile:
        assert store.user_state(h, now=T0.timestamp()).cart == {"C1"}
    assert all(k.decode().count("{") == 1 for k in store.r.scan_iter(match=f"{store.p}u:*"))


def test_a_replicas_counter_snapshot_answers_as_redis_does_and_keeps_decaying(store):
    from recsys.serve.item_counters import ItemCounters

    store.apply([ev("product_viewed", "P1", 0), ev("add_to_cart", "P1", 5), ev("product_viewed", "C1", 9)], CATEGORY)
    keys = ["product_viewed:24h", "add_to_cart:168h"]
    snapshot = ItemCounters(store, keys, chunk=2)   # chunks of 2: three SKUs take two script calls
    snapshot.refresh(["P1", "C1", "C2"])
    for hours in (3, 30):
        now = (T0 + timedelta(hours=hours)).timestamp()
        skus = ["C1", "P1", "C2", "listed-later"]
        expected = np.vstack([store.counter_matrix(skus[:3], keys, now=now), np.zeros((1, 2))])
        assert np.allclose(snapshot.counter_matrix(skus, keys, now=now), expected)
    with pytest.raises(KeyError):
        snapshot.counter_matrix(["P1"], ["purchase_completed:168h"])
