"""Load the Amazon Beauty 5-core benchmark (../shared/data/amazon-beauty) into the project's tables.

The items become a Catalog like the synthetic one (family "beauty", kind "product", no prices, no
edges), the interactions become purchase_completed events, and `load_beauty_sequences` gives the
raw per-user sequences the published full-ranking protocol is defined on. Every load first checks
the files against SHA256SUMS, so a benchmark number always comes from the published bytes.
"""

from __future__ import annotations

import hashlib
import html
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.sim.catalog import EDGE_COLUMNS, ITEM_COLUMNS, Catalog
from recsys.sim.shoppers import EVENT_COLUMNS

# Amazon's top-level Beauty departments. An attribute row reads "[brand |] department | subcategory ...",
# so the first attribute is the brand exactly when it is not one of these (checked on all 12,101 rows:
# whenever the first attribute is not a department, the second one is).
DEPARTMENTS = frozenset({"Bath & Body", "Fragrance", "Hair Care", "Makeup", "Skin Care", "Tools & Accessories"})
UNKNOWN_BRAND = "unknown"
EVENT_NAMESPACE = uuid.UUID("6f1c1d2e-8a4b-4c3d-9e5f-beaa00000001")   # uuid5 namespace of Beauty event ids


class ChecksumError(ValueError):
    """A data file is missing or differs from SHA256SUMS."""


def default_dir() -> Path:
    """$RECSYS_BEAUTY_DIR, else ../shared/data/amazon-beauty beside the repository."""
    env = os.environ.get("RECSYS_BEAUTY_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data" / "amazon-beauty"


def verify_checksums(path: str | Path | None = None) -> None:
    """Raise ChecksumError unless every file listed in SHA256SUMS has its listed digest."""
    path = Path(path or default_dir())
    bad = []
    for line in (path / "SHA256SUMS").read_text().splitlines():
        if not line.strip():
            continue
        digest, name = line.split(maxsplit=1)
        name = name.lstrip("*")
        file = path / name
        if not file.is_file() or hashlib.sha256(file.read_bytes()).hexdigest() != digest:
            bad.append(name)
    if bad:
        raise ChecksumError(f"{path}: checksum mismatch or missing file: {', '.join(bad)}")


def load_beauty_catalog(path: str | Path | None = None) -> Catalog:
    """Items keyed by ASIN (sku) with the benchmark's integer item_id; the edge table is empty."""
    path = Path(path or default_dir())
    verify_checksums(path)
    items = _read_tsv(path / "items.tsv", ["item_id", "asin", "title"])
    attrs = _read_tsv(path / "item_attributes.tsv", ["item_id", "attributes"])
    items = items.merge(attrs, on="item_id", how="left").fillna({"attributes": ""})
    split = [_split_attributes(a) for a in items["attributes"]]
    title = items["title"].map(html.unescape).str.strip()
    out = pd.DataFrame({
        "sku": items["asin"],
        "title": title.where(title != "", "item " + items["asin"]),
        "family": "beauty",
        "category": [cats[-1] if cats else "" for _, cats in split],
        "category_path": [" > ".join(cats) for _, cats in split],
        "kind": "product",
        "brand": [brand for brand, _ in split],
        "price": np.nan,
        "margin": np.nan,
        "price_band": 0,
        "specs": [{} for _ in range(len(items))],
        "image_uri": None,
        "launch_date": None,
        "stock": 0,
        "item_id": items["item_id"].astype(int),
    })
    out["spec_text"] = out["title"] + ". " + out["category_path"] + ". Brand: " + out["brand"] + "."
    edges = pd.DataFrame({c: pd.Series(dtype=float if c == "weight" else str) for c in EDGE_COLUMNS})
    return Catalog(items=out[ITEM_COLUMNS + ["item_id"]], edges=edges)


def load_beauty_sequences(path: str | Path | None = None) -> list[tuple[int, list[int], list[int]]]:
    """(user_id, item_ids, unix timestamps) per user, in file order; items are in time order."""
    path = Path(path or default_dir())
    verify_checksums(path)
    seqs = _read_rows(path / "sequences.txt")
    times = _read_rows(path / "timestamps.txt")
    if [(u, len(s)) for u, s in seqs] != [(u, len(t)) for u, t in times]:
        raise ValueError(f"{path}: sequences.txt and timestamps.txt are not aligned")
    return [(u, s, t) for (u, s), (_, t) in zip(seqs, times)]


def load_beauty_events(path: str | Path | None = None) -> pd.DataFrame:
    """One purchase_completed event per interaction (EVENT_COLUMNS), sorted by ts; a shopper's
    purchases on one day share a session and an order."""
    path = Path(path or default_dir())
    sequences = load_beauty_sequences(path)
    asin = _read_tsv(path / "items.tsv", ["item_id", "asin", "title"]).set_index("item_id")["asin"]
    user = np.concatenate([np.full(len(s), u) for u, s, _ in sequences])
    item = np.concatenate([s for _, s, _ in sequences])
    position = np.concatenate([np.arange(len(s)) for _, s, _ in sequences])
    ts = pd.to_datetime(np.concatenate([t for _, _, t in sequences]), unit="s", utc=True).as_unit("ns")
    user_id = pd.Series(user).map("b{}".format)
    session = user_id + "-" + pd.Series(ts.strftime("%Y%m%d"))
    events = pd.DataFrame({
        "event_id": [str(uuid.uuid5(EVENT_NAMESPACE, f"{u}:{p}")) for u, p in zip(user.tolist(), position.tolist())],
        "type": "purchase_completed",
        "user_id": user_id,
        "session_id": session,
        "sku": asin.loc[item].to_numpy(),
        "ts": ts,
        "device": None,
        "geo": None,
        "price": np.nan,
        "quantity": 1,
        "order_id": session,
    })
    return events.sort_values("ts", kind="stable", ignore_index=True)[EVENT_COLUMNS]


def _split_attributes(attributes: str) -> tuple[str, list[str]]:
    """"OPI | Makeup | Nails" -> ("OPI", ["Makeup", "Nails"]); "Makeup | Lips" -> ("unknown", [...])."""
    names = [html.unescape(a).strip() for a in attributes.split(" | ") if a.strip()]
    if names and names[0] not in DEPARTMENTS:
        brand, names = names[0], names[1:]
        return (UNKNOWN_BRAND if brand.lower() == UNKNOWN_BRAND else brand), names
    return UNKNOWN_BRAND, names


def _read_tsv(file: Path, names: list[str]) -> pd.DataFrame:
    """A headered TSV read verbatim: no quoting, no NA guessing (titles contain quotes and 'NA')."""
    return pd.read_csv(file, sep="\t", header=0, names=names, dtype={"item_id": int}, quoting=3,
                       keep_default_na=False)


def _read_rows(file: Path) -> list[tuple[int, list[int]]]:
    """Lines of "user value value ..." as (user, [values])."""
    rows = []
    for line in file.read_text().splitlines():
        if line.strip():
            user, *values = map(int, line.split())
            rows.append((user, values))
    return rows
