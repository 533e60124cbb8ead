"""The rule engine through the slots stage, on an in-memory catalog (no services): the fixed order,
conflicts, time windows, and hypothesis properties over random rule sets and candidate lists."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.catalog.store import CatalogSnapshot
from recsys.features.online_store import UserState
from recsys.rules.engine import CompiledRuleSet
from recsys.rules.filters import ItemTable
from recsys.rules.schema import RuleSet, validate
from recsys.serve.request import Pooled, RecRequest, Score
from recsys.serve.stages.slots import Slots
from tests.conftest import make_cfg

BRANDS = ["Zenta", "Volt", "Orbi", "Kora", "Lumo"]
CATEGORIES = ["Cases", "Chargers", "Cables", "Phones", "Batteries", "Audio"]
N_ITEMS = 300


def _catalog(n: int = N_ITEMS, seed: int = 0) -> CatalogSnapshot:
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({
        "sku": [f"S{i:04d}" for i in range(n)],
        "title": [f"item {i}" for i in range(n)],
        "family": "phones",
        "category": [CATEGORIES[i % len(CATEGORIES)] for i in range(n)],
        "kind": ["device" if i % len(CATEGORIES) == 3 else "accessory" for i in range(n)],
        "brand": [BRANDS[(i // 7) % len(BRANDS)] for i in range(n)],
        "price": rng.uniform(5, 900, n).round(2),
        "margin": rng.uniform(0.05, 0.6, n).round(3),
        "price_band": rng.integers(0, 5, n),
        "stock": np.where(np.arange(n) % 50 == 49, 0, 10),
        "launch_date": [pd.Timestamp("2026-01-01") + pd.Timedelta(days=int(d)) for d in rng.integers(0, 300, n)],
        "tags": [["new"] if i % 9 == 0 else [] for i in range(n)],
    }).set_index("sku")
    accessories = {"S0003": [("S0000", 1.0), ("S0001", 1.0)]}
    fits = {"S0000": ["S0003"], "S0001": ["S0003"]}
    return CatalogSnapshot(items, accessories, fits, frozenset(items.index[items["stock"] > 0]))


CATALOG = _catalog()
TABLE = ItemTable(CATALOG, now=datetime(2026, 11, 29, tzinfo=timezone.utc).timestamp())
CFG = make_cfg()


class Snapshots(SimpleNamespace):
    """The in-memory snapshots the slots stage reads (what serving's Resources holds)."""

    def refresh(self):
        pass


def _slots(rules: CompiledRuleSet | None = None) -> Slots:
    bestsellers = [(f"S{i:04d}", 1.0) for i in range(100, 160)]
    res = Snapshots(catalog=CATALOG, bestsellers=bestsellers, head_skus=frozenset(s for s, _ in bestsellers),
                    rules=SimpleNamespace(live=rules, live_version=rules.version if rules else None))
    return Slots(CFG, res)


def _compiled(body: dict) -> CompiledRuleSet:
    ruleset, errors = validate(body, ["homepage_hero", "pdp_fbt", "cart_upsell"])
    assert not errors, errors
    return CompiledRuleSet("rules-v1", ruleset, TABLE, [f"S{i:04d}" for i in range(100, 160)])


def _ranked(skus: list[str]) -> list[tuple[Pooled, Score]]:
    return [(Pooled(sku, "test"), Score(float(len(skus) - i))) for i, sku in enumerate(skus)]


def _rule(kind: str, rid: str, **fields) -> dict:
    return {"id": rid, "kind": kind, "label": rid, "surfaces": ["homepage_hero", "pdp_fbt", "cart_upsell"], **fields}


def _rail(body: dict | None, pool: list[str], k: int = 12, surface: str = "homepage_hero", **req) -> list[str]:
    rules = _compiled(body) if body is not None else None
    slate = _slots(rules).arrange(RecRequest(surface, k=k, explain=True, **req), UserState(user_id=""),
                                  _ranked(pool), rules)
    return [i["sku"] for i in slate.items]


POOL = [f"S{i:04d}" for i in range(0, 120)]


def test_without_rules_the_rail_is_the_mmr_order_and_names_no_version():
    slate = _slots().arrange(RecRequest("homepage_hero"), UserState(user_id=""), _ranked(POOL), None)
    assert len(slate.items) == 12 and slate.rule_set_version is None


def test_a_block_removes_matching_items_everywhere_even_from_the_fill_and_pins():
    body = {"name": "t", "rules": [_rule("block", "no-batteries", filter={"field": "category", "eq": "Batteries"}),
                                   _rule("pin", "pin-battery", sku="S0004", slot=1)]}   # S0004 is a battery
    rail = _rail(body, POOL[:5])   # a short pool: the rest comes from the fallback
    assert len(rail) == 12
    assert all(CATALOG.items.at[s, "category"] != "Batteries" for s in rail)
    assert "S0004" not in rail


def test_boost_and_bury_reorder_within_the_pool():
    plain = _rail(None, POOL)
    body = {"name": "t", "rules": [_rule("boost", "volt", filter={"field": "brand", "eq": "Volt"}, factor=50)]}
    boosted = _rail(body, POOL)
    assert sum(CATALOG.items.at[s, "brand"] == "Volt" for s in boosted) > sum(
        CATALOG.items.at[s, "brand"] == "Volt" for s in plain)
    body = {"name": "t", "rules": [_rule("bury", "zenta", filter={"field": "brand", "eq": "Zenta"}, factor=0.01)]}
    assert all(CATALOG.items.at[s, "brand"] != "Zenta" for s in _rail(body, POOL))


def test_pins_win_their_slot_by_priority_then_rule_order():
    body = {"name": "t", "rules": [_rule("pin", "low", sku="S0010", slot=2, priority=1),
                                   _rule("pin", "high", sku="S0020", slot=2, priority=5),
                                   _rule("pin", "same-slot-later", sku="S0030", slot=3),
                                   _rule("pin", "same-slot-first", sku="S0031", slot=3, priority=0)]}
    rules = _compiled(body)
    slate = _slots(rules).arrange(RecRequest("homepage_hero", explain=True), UserState(user_id=""), _ranked(POOL), rules)
    rail = [i["sku"] for i in slate.items]
    assert rail[1] == "S0020" and rail[2] == "S0030"   # equal priority: the earlier rule
    assert "S0010" not in rail[1:2] and slate.rules["pins"]["low"]["honoured"] is False
    assert "pinned at slot 2" in " ".join(slate.items[1]["explain"]["rules"])


def test_a_pin_is_not_placed_when_excluded_or_out_of_stock():
    body = {"name": "t", "rules": [_rule("pin", "in-cart", sku="S0012", slot=1), _rule("pin", "no-stock", sku="S0049", slot=2)]}
    pool = [s for s in POOL if s not in ("S0012", "S0049")]   # retrieval leaves out the cart and what is out of stock
    rail = _rail(body, pool, surface="cart_upsell", cart=["S0012"])
    assert "S0012" not in rail and "S0049" not in rail


def test_a_cap_holds_per_brand():
    body = {"name": "t", "rules": [_rule("cap", "three-per-brand", by="brand", max=3)]}
    rail = _rail(body, POOL)
    assert max(pd.Series([CATALOG.items.at[s, "brand"] for s in rail]).value_counts()) <= 3


def test_a_quota_draws_campaign_items_from_the_catalog_when_the_pool_lacks_them():
    body = {"name": "t", "rules": [_rule("quota", "new-in", filter={"field": "tags", "contains": "new"}, slots=4)]}
    pool = [s for s in POOL if "new" not in CATALOG.items.at[s, "tags"]]
    rail = _rail(body, pool)
    assert sum("new" in CATALOG.items.at[s, "tags"] for s in rail) >= 4


def test_margin_floors_count_and_average():
    count = {"name": "t", "rules": [_rule("margin_floor", "five-rich", margin=0.5, at_least=5)]}
    assert sum(CATALOG.items.at[s, "margin"] >= 0.5 for s in _rail(count, POOL)) >= 5
    average = {"name": "t", "rules": [_rule("margin_floor", "avg", margin=0.45, average=True)]}
    assert np.mean([CATALOG.items.at[s, "margin"] for s in _rail(average, POOL)]) >= 0.45


def test_conditions_see_the_request():
    body = {"name": "t", "rules": [_rule("block", "mobile-no-audio", filter={"field": "category", "eq": "Audio"},
                                         when={"field": "device", "eq": "mobile"})]}
    audio = lambda rail: sum(CATALOG.items.at[s, "category"] == "Audio" for s in rail)   # noqa: E731
    assert audio(_rail(body, POOL, device="mobile")) == 0
    assert audio(_rail(body, POOL, device="desktop")) > 0


def test_accessory_of_context_follows_the_page():
    body = {"name": "t", "rules": [_rule("pin", "p", sku="S0050", slot=1),
                                   _rule("quota", "fits", filter={"field": "accessory_of_context", "eq": True}, slots=2)]}
    rail = _rail(body, POOL[10:], surface="pdp_fbt", skus=["S0003"])
    assert {"S0000", "S0001"} <= set(rail)


@pytest.mark.parametrize("at, active", [("2026-12-04T22:59:59+00:00", False), ("2026-12-04T23:00:00+00:00", True),
                                        ("2026-12-06T22:59:59+00:00", True), ("2026-12-06T23:00:00+00:00", False)])
def test_time_windows_hold_at_their_edges_in_their_time_zone(at, active):
    body = {"name": "t", "rules": [_rule("pin", "weekend", sku="S0077", slot=1, window={
        "start": "2026-12-05T00:00:00", "end": "2026-12-07T00:00:00", "timezone": "Europe/Berlin"})]}
    rules = _compiled(body)
    got, inactive = rules.active("homepage_hero", None, now=datetime.fromisoformat(at).timestamp())
    assert bool(got) == active
    assert ("weekend" in inactive) == (not active)


# -- properties -------------------------------------------------------------------------------------

SKUS = [f"S{i:04d}" for i in range(N_ITEMS)]
leaf = st.one_of(
    st.builds(lambda v: {"field": "brand", "eq": v}, st.sampled_from(BRANDS)),
    st.builds(lambda v: {"field": "category", "in": v}, st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=3)),
    st.builds(lambda v: {"field": "margin", "gte": v}, st.floats(0, 0.7)),
    st.builds(lambda lo, w: {"field": "price", "between": [lo, lo + w]}, st.floats(0, 800), st.floats(0, 500)),
    st.builds(lambda v: {"field": "tags", "contains": v}, st.just("new")),
    st.builds(lambda v: {"field": "sku", "in": v}, st.lists(st.sampled_from(SKUS), min_size=1, max_size=5)),
)
filters = st.recursive(leaf, lambda inner: st.one_of(
    st.builds(lambda xs: {"all": xs}, st.lists(inner, min_size=1, max_size=3)),
    st.builds(lambda xs: {"any": xs}, st.lists(inner, min_size=1, max_size=3)),
    st.builds(lambda x: {"not": x}, inner)), max_leaves=4)


@st.composite
def rule_sets(draw, kinds=("block", "boost", "bury", "cap", "quota", "margin_floor", "pin")):
    rules, pin_slots, pin_skus = [], set(), set()
    for i in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(kinds))
        rid, prio = f"r{i}", draw(st.integers(-3, 3))
        if kind in ("block", "boost", "bury"):
            factor = {"boost": draw(st.floats(1.01, 20)), "bury": draw(st.floats(0.01, 0.99))}.get(kind)
            rules.append(_rule(kind, rid, filter=draw(filters), priority=prio, **({"factor": factor} if factor else {})))
        elif kind == "cap":
            rules.append(_rule(kind, rid, by=draw(st.sampled_from(["brand", "category"])), max=draw(st.integers(1, 5))))
        elif kind == "quota":
            rules.append(_rule(kind, rid, filter=draw(filters), slots=draw(st.integers(1, 4)), priority=prio))
        elif kind == "margin_floor":
            rules.append(_rule(kind, rid, margin=draw(st.floats(0.1, 0.5)), at_least=draw(st.integers(1, 4))))
        else:   # distinct slots and SKUs: a conflict has its own test
            slot, sku = draw(st.integers(1, 12)), draw(st.sampled_from(SKUS))
            if slot in pin_slots or sku in pin_skus:
                continue
            pin_slots.add(slot)
            pin_skus.add(sku)
            rules.append(_rule(kind, rid, sku=sku, slot=slot, priority=prio))
    return {"name": "random", "rules": rules}


pools = st.lists(st.sampled_from(SKUS), min_size=0, max_size=120, unique=True)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _blocked_skus(body: dict) -> set[str]:
    """Every SKU some block of `body` matches, from the blocks' own filters (not the engine's verdicts)."""
    gone = _compiled(body).plan("homepage_hero", None).blocked(np.arange(TABLE.n), None)
    return {TABLE.skus[i] for i in np.flatnonzero(gone)}


@PROPERTY
@given(body=rule_sets(), pool=pools)
def test_property_blocked_never_shown_pins_at_their_slot_k_distinct_and_deterministic(body, pool):
    rail = _rail(body, pool)
    blocked = _blocked_skus(body)
    assert len(rail) == len(set(rail))
    # k whenever k items are left: the fallback pool (60 best sellers, then the whole catalog) draws on them all
    left = (set(pool) | CATALOG.in_stock) - blocked
    assert len(rail) == min(12, len(left))
    assert not blocked & set(rail)
    for rule in body["rules"]:
        if rule["kind"] == "pin" and rule["sku"] not in blocked and rule["sku"] in CATALOG.in_stock:
            if len(rail) >= rule["slot"]:
                assert rail[rule["slot"] - 1] == rule["sku"], rule
            else:   # blocks left the rail shorter than the slot: the pin closes it
                assert rule["sku"] in rail, rule
    assert _rail(body, pool) == rail


@PROPERTY
@given(by=st.sampled_from(["brand", "category"]), most=st.integers(1, 4), pool=pools)
def test_property_a_cap_holds_whenever_the_candidates_allow(by, most, pool):
    body = {"name": "cap", "rules": [_rule("cap", "c", by=by, max=most)]}
    rail = _rail(body, pool)
    groups = pd.Series([CATALOG.items.at[s, by] for s in rail]).value_counts()
    in_stock = CATALOG.items.loc[sorted(CATALOG.in_stock)]
    if in_stock[by].value_counts().clip(upper=most).sum() >= 12:   # the catalog allows 12 under the cap
        assert groups.max() <= most
    else:                                                            # the rail's length wins, the cap bends
        assert len(rail) == 12


@PROPERTY
@given(filt=filters, slots=st.integers(1, 6), pool=pools)
def test_property_a_quota_holds_whenever_matching_items_exist(filt, slots, pool):
    body = {"name": "quota", "rules": [_rule("quota", "q", filter=filt, slots=slots)]}
    rules = _compiled(body)
    matching = np.flatnonzero(rules.masks["q"][:-1] & TABLE.in_stock[:-1])
    rail = _rail(body, pool)
    got = int(rules.masks["q"][TABLE.rows(rail)].sum())
    assert got >= min(slots, len(matching))


@PROPERTY
@given(margin=st.floats(0.05, 0.55), at_least=st.integers(1, 12), pool=pools)
def test_property_a_margin_floor_holds_whenever_the_catalog_allows(margin, at_least, pool):
    body = {"name": "floor", "rules": [_rule("margin_floor", "f", margin=margin, at_least=at_least)]}
    rail = _rail(body, pool)
    rich = int(sum(CATALOG.items.at[s, "margin"] >= margin for s in rail))
    available = int(((CATALOG.items["margin"] >= margin) & (CATALOG.items["stock"] > 0)).sum())
    assert rich >= min(at_least, available)


def test_rule_set_models_round_trip_through_their_json():
    body = {"name": "t", "rules": [_rule("block", "b", filter={"not": {"any": [{"field": "price", "lte": 5},
                                                                                {"field": "brand", "in": ["Volt"]}]}})]}
    ruleset = RuleSet.model_validate(body)
    assert RuleSet.model_validate(ruleset.model_dump(mode="json", by_alias=True, exclude_none=True)) == ruleset
