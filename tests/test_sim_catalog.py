"""The synthetic electronics catalog: size, schema, prices and margins, the fit graph, determinism."""

import json
from datetime import date

import pandas as pd
import pytest

from recsys.sim.catalog import ACCESSORIES, EDGE_COLUMNS, FAMILIES, ITEM_COLUMNS, generate_catalog


@pytest.fixture(scope="module")
def catalog():
    return generate_catalog(1000, seed=0)


@pytest.fixture(scope="module")
def items(catalog):
    return catalog.items.set_index("sku", drop=False)


@pytest.mark.parametrize("n", [400, 1500])
def test_size_within_three_percent(n):
    assert abs(len(generate_catalog(n, seed=3).items) - n) <= 0.03 * n


def test_schema(catalog, items):
    assert list(catalog.items.columns) == ITEM_COLUMNS
    assert list(catalog.edges.columns) == EDGE_COLUMNS
    assert catalog.items["sku"].is_unique
    assert catalog.items["sku"].str.fullmatch(r"E\d{6}").all()
    assert set(items["family"]) == set(FAMILIES)
    assert set(items["kind"]) == {"device", "accessory", "part"}
    assert items["title"].str.len().gt(5).all()
    assert items["image_uri"].isna().all()
    assert all(isinstance(s, dict) for s in items["specs"])
    json.dumps(list(items["specs"]))                      # specs go to a jsonb column as they are
    assert all(r.title in r.spec_text and r.brand in r.spec_text and r.category_path in r.spec_text
               for r in items.itertuples())
    assert items["launch_date"].between(date(2023, 9, 1), date(2026, 9, 1)).all()
    assert (items["stock"] >= 0).all() and (items["stock"] == 0).any()


def test_device_share(items):
    assert 0.18 <= (items["kind"] == "device").mean() <= 0.27


def test_device_variants_are_separate_skus(items):
    devices = items[items["kind"] == "device"]
    models = devices["specs"].map(lambda s: s["model"])
    assert models.value_counts().max() > 1
    assert all(title.startswith(model + " ") for title, model in zip(devices["title"], models))


def test_prices_and_margins(items):
    assert (items["price"] > 0).all()
    assert (items["price"].round(2) == items["price"]).all()
    devices, others = items[items["kind"] == "device"], items[items["kind"] != "device"]
    assert devices["margin"].between(0.03, 0.15).all()
    assert others["margin"].between(0.30, 0.70).all()
    assert devices["price"].median() > 5 * others["price"].median()


def test_price_bands_follow_price_within_category(items):
    assert set(items["price_band"]) == {1, 2, 3, 4, 5}
    for _, group in items.groupby("category"):
        by_band = group.groupby("price_band")["price"]
        assert (by_band.max().iloc[:-1].to_numpy() <= by_band.min().iloc[1:].to_numpy()).all()


def test_graph_is_consistent(catalog, items):
    edges = catalog.edges
    assert set(edges["src_sku"]) <= set(items.index[items["kind"] == "device"])
    assert set(edges["dst_sku"]) <= set(items.index[items["kind"] != "device"])
    assert not edges.duplicated(["src_sku", "dst_sku"]).any()
    assert (edges["kind"].to_numpy() == items.loc[edges["dst_sku"], "kind"].to_numpy()).all()
    assert edges["weight"].between(0, 1, inclusive="right").all()
    assert set(items.index[items["kind"] != "device"]) == set(edges["dst_sku"])   # everything fits something


def test_model_specific_accessories_fit_every_variant_of_one_model(catalog, items):
    models = items.loc[items["kind"] == "device", "specs"].map(lambda s: s["model"])
    model_fit = [c for c, a in ACCESSORIES.items() if a.fit == "model"]
    cases = items[items["category"].isin(model_fit)]
    assert len(cases) > 50
    fits = catalog.edges.groupby("dst_sku")["src_sku"].apply(set)
    for sku, specs in cases["specs"].items():
        assert fits[sku] == set(models.index[models == specs["fits"]])
    weights = catalog.edges.merge(items[["category"]], left_on="dst_sku", right_index=True)
    assert (weights.loc[weights["category"] == "phone_case", "weight"] == 1.0).all()
    generic = weights.loc[weights["category"].isin(["usb_c_charger", "usb_c_cable", "mouse"]), "weight"]
    assert len(generic) and (generic < 1.0).all()


def test_generic_accessories_fit_by_spec():
    catalog = generate_catalog(600, seed=4, generic_per_device=None)      # the full compatibility graph
    items = catalog.items.set_index("sku")
    spec = lambda sku, key: items.at[sku, "specs"].get(key)  # noqa: E731
    fits = catalog.edges.groupby("dst_sku")["src_sku"].apply(set)
    charger = ACCESSORIES["usb_c_charger"]
    usb_c = {s for s in items.index[items["category"].isin(charger.targets)] if spec(s, "port") == "usb-c"}
    for sku in items.index[items["category"] == "usb_c_charger"]:
        assert fits[sku] == usb_c
    for sku in items.index[items["category"] == "lens"]:
        assert {spec(d, "mount") for d in fits[sku]} == {spec(sku, "mount")}
    for sku in items.index[items["category"] == "memory_card"]:
        assert {spec(d, "card_slot") for d in fits[sku]} == {spec(sku, "card_slot")}


def test_deterministic_by_seed():
    a, b, c = generate_catalog(500, seed=7), generate_catalog(500, seed=7), generate_catalog(500, seed=8)
    pd.testing.assert_frame_equal(a.items, b.items)
    pd.testing.assert_frame_equal(a.edges, b.edges)
    assert not a.items["title"].equals(c.items["title"])
