"""The Amazon Beauty loader: counts, the brand/category rule, event shape, checksum enforcement."""

import shutil

import pytest

from recsys.catalog.amazon import (
    ChecksumError, default_dir, load_beauty_catalog, load_beauty_events, load_beauty_sequences, verify_checksums,
)
from recsys.sim.catalog import EDGE_COLUMNS, ITEM_COLUMNS
from recsys.sim.shoppers import EVENT_COLUMNS

N_USERS, N_ITEMS, N_INTERACTIONS = 22_363, 12_101, 198_502

pytestmark = pytest.mark.skipif(not (default_dir() / "SHA256SUMS").exists(), reason="Amazon Beauty data not present")


@pytest.fixture(scope="module")
def catalog():
    return load_beauty_catalog()


@pytest.fixture(scope="module")
def events():
    return load_beauty_events()


def test_catalog(catalog):
    items = catalog.items.set_index("item_id")
    assert list(catalog.items.columns) == ITEM_COLUMNS + ["item_id"]
    assert list(catalog.edges.columns) == EDGE_COLUMNS and catalog.edges.empty
    assert len(items) == N_ITEMS and sorted(items.index) == list(range(1, N_ITEMS + 1))
    assert catalog.items["sku"].is_unique
    assert set(items["family"]) == {"beauty"} and set(items["kind"]) == {"product"}
    assert items["price"].isna().all() and (items["price_band"] == 0).all() and (items["stock"] == 0).all()
    assert items.loc[1, ["sku", "brand", "category", "category_path"]].tolist() == [
        "B004756YJA", "OPI", "Nail Polish", "Makeup > Nails > Nail Polish"]
    assert items.loc[3, "brand"] == "unknown"                     # "Skin Care | Face | ..." has no brand
    assert "L'Oreal Paris" in set(items["brand"])                 # HTML entities are decoded
    assert not items["brand"].isin({"Skin Care", "Hair Care", "Makeup", "Fragrance", "Unknown"}).any()
    assert (items["title"] != "").all() and items["title"].str.fullmatch(r"item B\w+").sum() == 7
    assert items.loc[1, "spec_text"].startswith("OPI Nail Lacquer")


def test_sequences():
    sequences = load_beauty_sequences()
    assert len(sequences) == N_USERS
    assert [u for u, _, _ in sequences] == list(range(1, N_USERS + 1))
    assert sum(len(items) for _, items, _ in sequences) == N_INTERACTIONS
    assert len({i for _, items, _ in sequences for i in items}) == N_ITEMS
    assert sequences[0][1] == [1, 2, 3, 4, 5]
    assert all(len(items) == len(ts) and ts == sorted(ts) for _, items, ts in sequences)


def test_events(events, catalog):
    assert list(events.columns) == EVENT_COLUMNS
    assert len(events) == N_INTERACTIONS and events["user_id"].nunique() == N_USERS
    assert set(events["type"]) == {"purchase_completed"}
    assert events["user_id"].str.fullmatch(r"b\d+").all() and events["event_id"].is_unique
    assert events["ts"].is_monotonic_increasing and str(events["ts"].dt.tz) == "UTC"
    assert set(events["sku"]) == set(catalog.items["sku"])
    first = events[events["user_id"] == "b1"]
    assert first["sku"].tolist()[0] == "B004756YJA"
    assert (first["session_id"] == "b1-" + first["ts"].dt.strftime("%Y%m%d")).all()
    assert load_beauty_events()["event_id"].head(100).equals(events["event_id"].head(100))   # deterministic ids


@pytest.fixture
def copy_dir(tmp_path):
    for file in default_dir().iterdir():
        shutil.copyfile(file, tmp_path / file.name)       # copyfile: the copy is writable, unlike the source
    return tmp_path


def test_checksum_failure_on_a_tampered_copy(copy_dir):
    verify_checksums(copy_dir)
    with open(copy_dir / "sequences.txt", "a") as f:
        f.write("22364 1 2 3 4 5\n")
    with pytest.raises(ChecksumError, match="sequences.txt"):
        load_beauty_sequences(copy_dir)
    with pytest.raises(ChecksumError):
        load_beauty_catalog(copy_dir)


def test_checksum_failure_on_a_missing_file(copy_dir):
    (copy_dir / "items.tsv").unlink()
    with pytest.raises(ChecksumError, match="items.tsv"):
        verify_checksums(copy_dir)


def test_env_overrides_the_default_dir(copy_dir, monkeypatch):
    monkeypatch.setenv("RECSYS_BEAUTY_DIR", str(copy_dir))
    assert default_dir() == copy_dir
    assert len(load_beauty_sequences()) == N_USERS
