"""Filters compiled once per catalog snapshot into boolean masks over its rows.

A rule set's item filters are evaluated for the whole catalog when the set is compiled (12k rows, a
few numpy operations a leaf), so a request only indexes a mask with its candidates' rows. The one
leaf that depends on the request (`accessory_of_context`) stays a function of the request's context.
A request condition (`when`) is evaluated once per request over a handful of request facts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from recsys.rules.schema import ITEM_FIELDS, REQUEST_FIELDS


class ItemTable:
    """A catalog snapshot's attributes as arrays by row, plus one last row standing for a SKU the
    catalog lacks (it matches no leaf), so `rows` can hold -1."""

    def __init__(self, catalog, now: float | None = None):
        items: pd.DataFrame = catalog.items
        self.catalog = catalog
        self.skus = list(items.index)
        self.row_of = {sku: i for i, sku in enumerate(self.skus)}
        self.n = len(self.skus)
        now = time.time() if now is None else now
        self.columns: dict[str, np.ndarray] = {"sku": np.array(self.skus + [None], dtype=object)}
        for name in ("title", "family", "category", "kind", "brand"):
            self.columns[name] = np.append(items[name].to_numpy(dtype=object), None)
        for name in ("price", "price_band", "margin", "stock"):
            self.columns[name] = np.append(pd.to_numeric(items[name], errors="coerce").to_numpy(dtype=float), np.nan)
        launch = pd.to_datetime(items["launch_date"], errors="coerce", utc=True) if "launch_date" in items else None
        age = ((now - launch.map(lambda t: t.timestamp() if pd.notna(t) else np.nan)) / 86400).to_numpy(dtype=float) \
            if launch is not None else np.full(self.n, np.nan)
        self.columns["age_days"] = np.append(age, np.nan)
        tags = items["tags"].tolist() if "tags" in items else [()] * self.n
        self.columns["tags"] = np.array([tuple(t or ()) for t in tags] + [()], dtype=object)
        self.in_stock = np.append(self.columns["stock"][:-1] > 0, False)
        self.margin = np.nan_to_num(self.columns["margin"], nan=0.0)
        # brand and category as integer codes (caps count them); the last row's code is its own
        self.codes = {name: np.append(pd.factorize(items[name])[0], -2) for name in ("brand", "category")}

    def rows(self, skus: list[str]) -> np.ndarray:
        get = self.row_of.get
        return np.array([get(s, -1) for s in skus], dtype=np.int64)


@dataclass
class RequestFacts:
    """What a request condition can see, and the request context an item filter can use."""

    device: str | None = None
    geo: str | None = None
    context_sku: list[str] = field(default_factory=list)
    context_category: list[str] = field(default_factory=list)
    cart_sku: list[str] = field(default_factory=list)
    cart_category: list[str] = field(default_factory=list)
    cohort: str = "new"
    accessory_rows: np.ndarray | None = None    # rows of the accessories of the context's SKUs
    table_size: int = 0                         # rows in the table they index (with its last row)
    memo: dict = field(default_factory=dict)    # filters on the request, evaluated for this request

    @property
    def accessory_mask(self) -> np.ndarray | None:
        """The accessories as a mask over the table's rows (built once, when a filter first asks)."""
        if self.accessory_rows is None:
            return None
        mask = self.memo.get("accessories")
        if mask is None:
            mask = self.memo["accessories"] = np.zeros(self.table_size, dtype=bool)
            mask[self.accessory_rows] = True
            mask[-1] = False
        return mask


# A compiled item filter: a mask over every row (static), or a function of (rows, facts) -> mask.
Compiled = "np.ndarray | Callable[[np.ndarray, RequestFacts], np.ndarray]"


def _text_leaf(values: np.ndarray, op: str, value) -> np.ndarray:
    if op == "eq":
        return values == value
    if op == "in":
        return np.isin(values, np.array(list(value), dtype=object))
    needle = str(value).lower()
    return np.array([v is not None and needle in str(v).lower() for v in values], dtype=bool)


def _number_leaf(values: np.ndarray, op: str, value) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        if op == "eq":
            return values == float(value)
        if op == "in":
            return np.isin(values, np.array(value, dtype=float))
        if op == "gte":
            return values >= value
        if op == "lte":
            return values <= value
        low, high = value
        return (values >= low) & (values <= high)


def _list_leaf(values: np.ndarray, op: str, value) -> np.ndarray:
    wanted = set(value) if op == "in" else {value}
    return np.array([bool(wanted.intersection(v)) for v in values], dtype=bool)


def compile_filter(node, table: ItemTable):
    """A filter tree (recsys/rules/schema.py) as a mask over `table`'s rows, or, when it depends on the
    request (`accessory_of_context`), a function of the request's facts giving that mask."""
    for name, combine in (("all", np.logical_and.reduce), ("any", np.logical_or.reduce)):
        children = getattr(node, name, None) if name in type(node).model_fields else None
        if children is not None:
            parts = [compile_filter(child, table) for child in children]
            if all(isinstance(p, np.ndarray) for p in parts):
                return combine(parts)
            return lambda facts, parts=parts, combine=combine: combine(
                [p if isinstance(p, np.ndarray) else p(facts) for p in parts])
    if "not_" in type(node).model_fields:
        part = compile_filter(node.not_, table)
        if isinstance(part, np.ndarray):
            return _known(~part)
        return lambda facts: _known(~part(facts))
    op, value = node.op
    if node.field == "accessory_of_context":
        nothing = np.zeros(table.n + 1, dtype=bool)

        def accessory(facts: RequestFacts) -> np.ndarray:
            found = facts.accessory_mask if facts is not None and facts.accessory_mask is not None else nothing
            return found if value else _known(~found)
        return accessory
    kind, values = ITEM_FIELDS[node.field], table.columns[node.field]
    mask = (_text_leaf if kind == "text" else _number_leaf if kind == "number" else _list_leaf)(values, op, value)
    return _known(mask)


def _known(mask: np.ndarray) -> np.ndarray:
    """A SKU the catalog lacks (the table's last row) matches no filter, negated or not."""
    mask[-1] = False
    return mask


def evaluate(compiled, rows: np.ndarray, facts: RequestFacts | None) -> np.ndarray:
    """The compiled filter's verdict on these rows. A filter on the request is evaluated once per
    request over the whole catalog (a few array operations) and remembered in `facts`."""
    if isinstance(compiled, np.ndarray):
        return compiled[rows]
    if facts is None:
        return compiled(None)[rows]
    full = facts.memo.get(id(compiled))
    if full is None:
        full = facts.memo[id(compiled)] = compiled(facts)
    return full[rows]


def compile_condition(node) -> Callable[[RequestFacts], bool]:
    """A request condition as a function of the request's facts (built once per rule set)."""
    for name, combine in (("all", all), ("any", any)):
        children = getattr(node, name, None) if name in type(node).model_fields else None
        if children is not None:
            parts = [compile_condition(child) for child in children]
            return lambda facts, parts=parts, combine=combine: combine(p(facts) for p in parts)
    if "not_" in type(node).model_fields:
        inner = compile_condition(node.not_)
        return lambda facts: not inner(facts)
    op, value = node.op
    name = node.field
    if REQUEST_FIELDS[name] == "list":
        if op == "contains":
            return lambda facts: value in getattr(facts, name)
        if op == "eq":
            return lambda facts: value in getattr(facts, name)
        wanted = set(value)
        return lambda facts: any(v in wanted for v in getattr(facts, name))
    if op == "eq":
        return lambda facts: getattr(facts, name) == value
    if op == "in":
        wanted = set(value)
        return lambda facts: getattr(facts, name) in wanted
    needle = str(value).lower()
    return lambda facts: getattr(facts, name) is not None and needle in str(getattr(facts, name)).lower()
