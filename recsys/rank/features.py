"""The 28 ranking features: defined once (name, meaning, source) and computed by one function.

Offline (recsys.rank.offline, from the event log as of each request time) and online
(recsys.rank.online, from Redis and the candidate pool) both fill a `RankContext` and call
`compute`, so the two cannot drift apart; tests/test_rank_features.py checks they agree.
Missing values are NaN (LightGBM treats them as missing; the MLP imputes).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd


class Feature(NamedTuple):
    name: str
    meaning: str
    source: str


FEATURES: tuple[Feature, ...] = (
    Feature("score_two_tower", "two-tower retrieval score (NaN when it did not propose the item)", "retrieval"),
    Feature("score_als", "ALS retrieval score", "retrieval"),
    Feature("score_content", "content similarity to the page / session (best content source)", "retrieval"),
    Feature("score_trending", "trending source score (decayed weighted activity, 24 h)", "retrieval"),
    Feature("score_accessories", "accessory-graph source score", "retrieval"),
    Feature("n_sources", "how many sources proposed the item (the source flags, summed; bestsellers counts "
            "here only: its score is the 7 d counters again)", "retrieval"),
    Feature("retrieval_rank", "position in the retrieval blend order (0 = first)", "retrieval"),
    Feature("log_price", "ln(1 + price)", "catalog"),
    Feature("margin", "margin share of the price", "catalog"),
    Feature("price_band", "price band within the category", "catalog"),
    Feature("price_vs_user", "ln(price / median price of the user's recent views)", "catalog + user views"),
    Feature("category_affinity", "user's decayed category affinity for the item's category, as a share", "user"),
    Feature("brand_affinity", "share of the user's recent views with the item's brand", "user views + catalog"),
    Feature("views_24h", "decayed views of the item, tau 24 h", "item counters"),
    Feature("views_7d", "decayed views of the item, tau 7 d", "item counters"),
    Feature("carts_7d", "decayed add-to-carts of the item, tau 7 d", "item counters"),
    Feature("purchases_7d", "decayed purchases of the item, tau 7 d", "item counters"),
    Feature("conversion_7d", "(purchases_7d + 0.5 carts_7d) / (views_7d + 1)", "item counters"),
    Feature("age_days", "days since launch", "catalog"),
    Feature("log_stock", "ln(1 + units in stock)", "catalog"),
    Feature("accessory_of_context", "max edge weight from the page SKU or a cart SKU to the item (0 = none)",
            "accessory graph"),
    Feature("accessory_of_owned", "max edge weight from a device the user bought to the item (0 = none)",
            "accessory graph + user"),
    Feature("hours_since_viewed", "hours since the user last viewed the item (NaN = not in recent views)", "user"),
    Feature("hours_since_purchased", "hours since the user bought the item (NaN = never)", "user"),
    Feature("session_length", "views in the current session (gaps under the session gap)", "user views"),
    Feature("device", "request device: 0 desktop, 1 mobile, 2 tablet, NaN unknown", "request"),
    Feature("hour", "UTC hour of the request", "request"),
    Feature("surface", "0 homepage_hero, 1 pdp_fbt, 2 cart_upsell (one model serves every surface)", "request"),
)
NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
INDEX = {n: i for i, n in enumerate(NAMES)}
assert len(NAMES) == 28 and len(set(NAMES)) == 28

# Retrieval source names as the serving sources call them -> the score column they feed.
SOURCE_COLUMNS = {"two_tower": "score_two_tower", "als": "score_als", "content": "score_content",
                  "content_session": "score_content", "content_item": "score_content",
                  "trending": "score_trending", "bestsellers": "score_bestsellers",
                  "accessories": "score_accessories"}
SCORE_COLUMNS = ("score_two_tower", "score_als", "score_content", "score_trending", "score_bestsellers",
                 "score_accessories")
# Item counters read from the online store (OnlineStore.counter_matrix keys), in this order.
COUNTER_KEYS = ("product_viewed:24h", "product_viewed:168h", "add_to_cart:168h", "purchase_completed:168h")
DEVICES = {"desktop": 0.0, "mobile": 1.0, "tablet": 2.0}
SURFACES = {"homepage_hero": 0.0, "pdp_fbt": 1.0, "cart_upsell": 2.0}
SESSION_GAP_S = 1800.0


@dataclass
class ItemTable:
    """Catalog attributes as index-aligned arrays, plus the accessory graph (device -> {item: weight})."""

    skus: list[str]
    price: np.ndarray
    margin: np.ndarray
    price_band: np.ndarray
    category: np.ndarray          # object arrays of str (or None)
    brand: np.ndarray
    kind: np.ndarray
    stock: np.ndarray
    launch: np.ndarray            # epoch seconds, NaN unknown
    accessories: dict[int, dict[int, float]]
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        if not self.index:
            self.index = {s: i for i, s in enumerate(self.skus)}

    @classmethod
    def from_frames(cls, items: pd.DataFrame, edges: pd.DataFrame) -> "ItemTable":
        """`items` has a sku column (or index) and the catalog columns; `edges` src_sku, dst_sku, weight."""
        items = items.reset_index() if "sku" not in items.columns else items
        items = items.sort_values("sku").reset_index(drop=True)
        skus = items["sku"].astype(str).tolist()
        index = {s: i for i, s in enumerate(skus)}
        launch = pd.to_datetime(items.get("launch_date"), utc=True, errors="coerce")
        launch_s = np.array([x.timestamp() if pd.notna(x) else np.nan for x in launch], dtype=np.float64)
        acc: dict[int, dict[int, float]] = {}
        for src, dst, w in edges[["src_sku", "dst_sku", "weight"]].itertuples(index=False):
            if src in index and dst in index:
                row = acc.setdefault(index[src], {})
                row[index[dst]] = max(float(w), row.get(index[dst], 0.0))

        def num(col):
            return pd.to_numeric(items[col], errors="coerce").to_numpy(np.float64)

        def obj(col):
            return items[col].astype(object).where(items[col].notna(), None).to_numpy(object)

        return cls(skus, num("price"), num("margin"), num("price_band"), obj("category"), obj("brand"),
                   obj("kind"), num("stock"), launch_s, acc, index)

    @classmethod
    def from_postgres(cls, conn) -> "ItemTable":
        items = pd.DataFrame(conn.execute(
            "SELECT sku, price::float8, margin::float8, price_band, category, brand, kind, stock, launch_date "
            "FROM items").fetchall(),
            columns=["sku", "price", "margin", "price_band", "category", "brand", "kind", "stock", "launch_date"])
        edges = pd.DataFrame(conn.execute("SELECT src_sku, dst_sku, weight::float8 FROM item_edges").fetchall(),
                             columns=["src_sku", "dst_sku", "weight"])
        return cls.from_frames(items, edges)


@dataclass
class RankContext:
    """Everything known at request time about one request and its candidates (plain data, no I/O).

    User fields are the user's state strictly before `now`, shaped like `UserState`. Candidate arrays
    are aligned with `candidates`, which is in retrieval (blend) order.
    """

    surface: str
    now: float                                   # epoch seconds
    device: str | None
    page_skus: list[str]
    cart: list[str]
    views: list[tuple[str, float]]               # (sku, ts), newest first (the last 20)
    purchased: dict[str, float]                  # sku -> ts of the last purchase
    category_affinity: dict[str, float]          # category -> decayed value at `now`
    candidates: list[str]
    source_scores: np.ndarray                    # (n, len(SCORE_COLUMNS)), NaN = not proposed by it
    counters: np.ndarray                         # (n, len(COUNTER_KEYS)), decayed values at `now`


def compute(ctx: RankContext, items: ItemTable) -> np.ndarray:
    """The (n_candidates, 28) float64 feature matrix of one request."""
    n = len(ctx.candidates)
    X = np.full((n, len(NAMES)), np.nan)
    if n == 0:
        return X
    idx = np.array([items.index.get(s, -1) for s in ctx.candidates])
    known = idx >= 0
    ix = np.where(known, idx, 0)

    def item_attr(arr):
        return np.where(known, arr[ix], np.nan)

    S = np.asarray(ctx.source_scores, dtype=np.float64)
    for j, col in enumerate(SCORE_COLUMNS):
        if col in INDEX:
            X[:, INDEX[col]] = S[:, j]
    X[:, INDEX["n_sources"]] = np.isfinite(S).sum(axis=1)
    X[:, INDEX["retrieval_rank"]] = np.arange(n)

    price = item_attr(items.price)
    X[:, INDEX["log_price"]] = np.log1p(price)
    X[:, INDEX["margin"]] = item_attr(items.margin)
    X[:, INDEX["price_band"]] = item_attr(items.price_band)
    view_idx = [items.index[s] for s, _ in ctx.views if s in items.index]
    view_prices = items.price[view_idx] if view_idx else np.array([])
    view_prices = view_prices[np.isfinite(view_prices) & (view_prices > 0)]
    if len(view_prices):
        X[:, INDEX["price_vs_user"]] = np.log(price / float(np.median(view_prices)))

    cats = np.where(known, items.category[ix], None)
    total_aff = sum(ctx.category_affinity.values())
    if total_aff > 0:
        X[:, INDEX["category_affinity"]] = [ctx.category_affinity.get(c, 0.0) / total_aff for c in cats]
    if view_idx:
        brands = np.where(known, items.brand[ix], None)
        view_brands = Counter(items.brand[view_idx].tolist())
        X[:, INDEX["brand_affinity"]] = [view_brands.get(b, 0) / len(view_idx) if b is not None else 0.0
                                         for b in brands]

    C = np.asarray(ctx.counters, dtype=np.float64)
    views24, views7, carts7, buys7 = (C[:, j] for j in range(len(COUNTER_KEYS)))
    X[:, INDEX["views_24h"]] = views24
    X[:, INDEX["views_7d"]] = views7
    X[:, INDEX["carts_7d"]] = carts7
    X[:, INDEX["purchases_7d"]] = buys7
    X[:, INDEX["conversion_7d"]] = (buys7 + 0.5 * carts7) / (views7 + 1.0)
    X[:, INDEX["age_days"]] = (ctx.now - item_attr(items.launch)) / 86400.0
    X[:, INDEX["log_stock"]] = np.log1p(np.maximum(item_attr(items.stock), 0))

    def edge_weight(anchors):
        out = np.zeros(n)
        for a in anchors:
            row = items.accessories.get(items.index.get(a, -1))
            if row:
                out = np.maximum(out, [row.get(i, 0.0) if k else 0.0 for i, k in zip(idx, known)])
        return out

    X[:, INDEX["accessory_of_context"]] = edge_weight(list(dict.fromkeys(ctx.page_skus + list(ctx.cart))))
    X[:, INDEX["accessory_of_owned"]] = edge_weight(sorted(ctx.purchased))

    last_view: dict[str, float] = {}
    for s, ts in ctx.views:                      # newest first: keep the first seen
        last_view.setdefault(s, ts)
    X[:, INDEX["hours_since_viewed"]] = [(ctx.now - last_view[s]) / 3600.0 if s in last_view else np.nan
                                         for s in ctx.candidates]
    X[:, INDEX["hours_since_purchased"]] = [(ctx.now - ctx.purchased[s]) / 3600.0 if s in ctx.purchased
                                            else np.nan for s in ctx.candidates]
    X[:, INDEX["session_length"]] = session_length(ctx.views, ctx.now)
    X[:, INDEX["device"]] = DEVICES.get(ctx.device or "", np.nan)
    X[:, INDEX["hour"]] = math.floor((ctx.now % 86400) / 3600)
    X[:, INDEX["surface"]] = SURFACES.get(ctx.surface, np.nan)
    return X


def session_length(views: list[tuple[str, float]], now: float, gap_s: float = SESSION_GAP_S) -> int:
    """Views chained back from `now` with no gap longer than `gap_s` (views newest first)."""
    count, last = 0, now
    for _, ts in views:
        if last - ts > gap_s:
            break
        count, last = count + 1, ts
    return count


def feature_table() -> pd.DataFrame:
    """The table of features (for docs and explanations)."""
    return pd.DataFrame(FEATURES, columns=["name", "meaning", "source"])
