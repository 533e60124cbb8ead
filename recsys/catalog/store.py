"""Write a catalog (items + accessory graph) into Postgres and read it back for serving."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd
import psycopg

ITEM_COLUMNS = ("sku", "catalog", "title", "family", "category", "category_path", "kind", "brand", "price",
                "margin", "price_band", "specs", "spec_text", "image_uri", "launch_date", "stock", "tags")
TAGGED_SPECS = ("port", "qi", "connectivity")   # specs a merchandiser's filter can name as `key:value` tags


def default_tags(kind, specs) -> list[str]:
    """Tags for a catalog that brings none: the item's kind and a few of its specs (`port:usb-c`)."""
    tags = [str(kind)] if isinstance(kind, str) else []
    for key in TAGGED_SPECS:
        value = (specs or {}).get(key) if isinstance(specs, dict) else None
        if value is not None:
            tags.append(f"{key}:{str(value).lower()}")
    return tags


def _none_if_nan(value):
    return None if value is None or (isinstance(value, float) and value != value) else value


def write_catalog(conn: psycopg.Connection, items: pd.DataFrame, edges: pd.DataFrame, catalog: str) -> int:
    """Upsert items and replace this catalog's edges, in one transaction."""
    items = items.assign(catalog=catalog)
    if "tags" not in items:
        items = items.assign(tags=[default_tags(k, s) for k, s in zip(items["kind"], items["specs"])])
    cols = ", ".join(ITEM_COLUMNS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in ITEM_COLUMNS if c != "sku")
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE items_staging (LIKE items INCLUDING DEFAULTS) ON COMMIT DROP")
        with cur.copy(f"COPY items_staging ({cols}) FROM STDIN") as copy:
            for row in items[list(ITEM_COLUMNS)].itertuples(index=False):
                values = [_none_if_nan(v) for v in row]
                values[ITEM_COLUMNS.index("specs")] = json.dumps(values[ITEM_COLUMNS.index("specs")] or {})
                copy.write_row(values)
        # listed_at: when a new SKU entered the catalog (its launch date when it has one); kept on update
        cur.execute(f"INSERT INTO items ({cols}, listed_at) SELECT {cols}, coalesce(launch_date::timestamptz, now()) "
                    f"FROM items_staging ON CONFLICT (sku) DO UPDATE SET {updates}, updated_at = now()")
        cur.execute("DELETE FROM item_edges e USING items i WHERE e.src_sku = i.sku AND i.catalog = %s", (catalog,))
        with cur.copy("COPY item_edges (src_sku, dst_sku, kind, weight) FROM STDIN") as copy:
            for row in edges[["src_sku", "dst_sku", "kind", "weight"]].itertuples(index=False):
                copy.write_row(tuple(row))
    return len(items)


@dataclass
class CatalogSnapshot:
    """The slice of the catalog that serving keeps in memory (12k SKUs: a few MB)."""

    items: pd.DataFrame                       # indexed by sku
    accessories: dict[str, list[tuple[str, float]]]   # device sku -> [(accessory sku, weight)] best first
    fits: dict[str, list[str]]                # accessory sku -> devices it fits
    in_stock: frozenset[str] = frozenset()    # a set lookup: pandas .at costs ~30 us a call
    variants: dict[str, tuple[str, ...]] = field(default_factory=dict)   # device sku -> the same model's
                                              # other SKUs (colours, storage): never upsold beside it

    def with_variants(self, skus) -> set[str]:
        """`skus` and every variant of the devices among them."""
        out = set(skus)
        for sku in skus:
            out.update(self.variants.get(sku, ()))
        return out


def read_catalog(conn: psycopg.Connection) -> CatalogSnapshot:
    items = pd.DataFrame(
        conn.execute("SELECT sku, title, family, category, kind, brand, price::float8 AS price, margin, "
                     "price_band, stock, launch_date, tags, specs->>'model' FROM items").fetchall(),
        columns=["sku", "title", "family", "category", "kind", "brand", "price", "margin", "price_band", "stock",
                 "launch_date", "tags", "model"],
    ).set_index("sku")
    accessories: dict[str, list[tuple[str, float]]] = {}
    fits: dict[str, list[str]] = {}
    for src, dst, weight in conn.execute("SELECT src_sku, dst_sku, weight FROM item_edges ORDER BY weight DESC"):
        accessories.setdefault(src, []).append((dst, weight))
        fits.setdefault(dst, []).append(src)
    models = items.loc[(items["kind"] == "device") & items["model"].notna(), "model"]
    variants = {sku: tuple(sorted(set(group) - {sku}))
                for group in models.groupby(models).groups.values() if len(group) > 1 for sku in group}
    return CatalogSnapshot(items.drop(columns="model"), accessories, fits,
                           frozenset(items.index[items["stock"] > 0]), variants)
