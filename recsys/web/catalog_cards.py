"""Product cards for rails: a rail names SKUs; a person needs the title, category, price and margin
band beside each slot's source and reasons."""

from __future__ import annotations

import psycopg

COLUMNS = ("sku", "title", "category", "brand", "kind", "price", "margin", "stock", "spec_text")


def items_by_sku(conn: psycopg.Connection, skus: list[str]) -> dict[str, dict]:
    rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM items WHERE sku = ANY(%s)", (list(skus),)).fetchall()
    return {r[0]: dict(zip(COLUMNS, r)) for r in rows}


def margin_band(margin: float | None, cfg) -> str:
    if margin is None:
        return "unknown"
    return "high" if margin >= float(cfg.web.high_margin) else "mid" if margin >= float(cfg.web.mid_margin) else "low"


def cards(conn: psycopg.Connection, cfg, items: list[dict]) -> list[dict]:
    """The rail's items (the API's dicts: sku, source, reasons, explain) with their catalog facts and,
    under `rules`, what merchandising rules did to each slot (a pin that moved a candidate up keeps the
    candidate's source and reasons: the pin is only in explain.rules)."""
    known = items_by_sku(conn, [i["sku"] for i in items])
    out = []
    for slot, item in enumerate(items):
        facts = known.get(item["sku"], {"sku": item["sku"], "title": item["sku"], "category": None, "price": None,
                                        "margin": None, "kind": None, "brand": None, "stock": None})
        out.append({**facts, "slot": slot, "source": item.get("source"), "reasons": item.get("reasons") or [],
                    "rules": (item.get("explain") or {}).get("rules") or [],   # what rules did to the slot
                    "score": item.get("score"), "explain": item.get("explain"),
                    "price": float(facts["price"]) if facts.get("price") is not None else None,
                    "margin_band": margin_band(facts.get("margin"), cfg)})
    return out
