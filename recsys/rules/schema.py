"""The rule language: a rule set is a JSON document these pydantic models describe and validate.

No code is evaluated: a filter is a tree of `all` / `any` / `not` over leaves that compare one field
with one operator (`{"field": "brand", "in": ["Zenta", "Volt"]}`). Item filters see an item's
attributes; a rule's `when` sees the request. `json_schema()` is the published JSON Schema
(conf/rules/schema.json); `validate()` answers every error with its JSON path and reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag,
                      ValidationError, field_validator, model_validator)

from recsys.features.events import PRINTABLE

# What a filter may look at. Numbers compare with gte / lte / between; text with eq / in / contains
# (a case-insensitive substring); lists (tags, the cart) match eq / in when any element does and
# `contains` when one element equals the value; flags with eq.
ITEM_FIELDS = {
    "sku": "text", "title": "text", "family": "text", "category": "text", "kind": "text", "brand": "text",
    "price": "number", "price_band": "number", "margin": "number", "stock": "number",
    "age_days": "number",               # days since the item's launch date
    "tags": "list",
    "accessory_of_context": "flag",     # fits a SKU on the page or in the cart (the accessory graph)
}
REQUEST_FIELDS = {
    "device": "text", "geo": "text",
    "context_sku": "list",              # the SKUs on the page (pdp_fbt)
    "context_category": "list",         # their categories
    "cart_sku": "list", "cart_category": "list",   # the cart, as sent and as the user's state holds it
    "cohort": "text",                   # new (no events) | returning (events, no purchase) | customer
}
OPERATORS = ("eq", "in", "gte", "lte", "between", "contains")
ALLOWED = {"text": {"eq", "in", "contains"}, "number": {"eq", "in", "gte", "lte", "between"},
           "list": {"eq", "in", "contains"}, "flag": {"eq"}}


def _utf8(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid UTF-8 (a lone surrogate)") from None
    return text


def Text(max_length: int, min_length: int = 0):
    """Printable, bounded, valid UTF-8: what a jsonb column, a log line and a Redis key can all hold."""
    return Annotated[str, StringConstraints(min_length=min_length, max_length=max_length, pattern=PRINTABLE),
                     AfterValidator(_utf8)]


Scalar = Union[bool, int, float, Text(200)]
Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Label = Text(200, 1)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Leaf(_Strict):
    """One comparison: the field, and exactly one operator with its value."""

    field: str
    eq: Scalar | None = None
    in_: list[Scalar] | None = Field(None, alias="in", min_length=1, max_length=1000)
    gte: float | None = None
    lte: float | None = None
    between: tuple[float, float] | None = None
    contains: Scalar | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)
    FIELDS: ClassVar[dict[str, str]] = ITEM_FIELDS   # which fields this kind of leaf may name

    @model_validator(mode="after")
    def _one_operator(self):
        given = [op for op in OPERATORS if getattr(self, "in_" if op == "in" else op) is not None]
        kind = self.FIELDS[self.field]
        if len(given) != 1:
            raise ValueError(f"needs exactly one operator of {', '.join(OPERATORS)}; got {len(given)}")
        op = given[0]
        if op not in ALLOWED[kind]:
            raise ValueError(f"{op!r} does not apply to {self.field!r} ({kind}); use {', '.join(sorted(ALLOWED[kind]))}")
        if op == "between" and self.between[0] > self.between[1]:
            raise ValueError("between: the low bound is above the high bound")
        if kind == "number" and op in ("eq", "in"):
            values = [self.eq] if op == "eq" else self.in_
            if any(isinstance(v, (bool, str)) for v in values):
                raise ValueError(f"{self.field!r} is a number: {op} needs numbers")
        if kind == "flag" and not isinstance(self.eq, bool):
            raise ValueError(f"{self.field!r} is a flag: eq needs true or false")
        return self

    @property
    def op(self) -> tuple[str, Any]:
        for op in OPERATORS:
            value = getattr(self, "in_" if op == "in" else op)
            if value is not None:
                return op, value
        raise AssertionError("validated leaves have one operator")


class ItemLeaf(_Leaf):
    """A comparison on one attribute of an item."""
    FIELDS: ClassVar[dict[str, str]] = ITEM_FIELDS
    field: Literal[tuple(ITEM_FIELDS)]


class RequestLeaf(_Leaf):
    """A comparison on one fact of the request."""
    FIELDS: ClassVar[dict[str, str]] = REQUEST_FIELDS
    field: Literal[tuple(REQUEST_FIELDS)]


def _node_kind(value: Any) -> str:
    """Which member of a filter union a value is (a JSON object, or a model when serializing): `~all`,
    `~any`, `~not` or `~leaf`. Tags start with `~` so that error paths can leave them out (`error_path`)."""
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        return next((f"~{name}" for name, attr in (("all", "all"), ("any", "any"), ("not", "not_")) if attr in fields),
                    "~leaf")
    keys = value.keys() if isinstance(value, dict) else ()
    return next((f"~{name}" for name in ("all", "any", "not") if name in keys), "~leaf")


def _tree(leaf: type) -> Any:
    """The filter grammar over one kind of leaf (item filters, request conditions)."""

    class All(_Strict):
        all: list[Node] = Field(min_length=1, max_length=100)

    class Any_(_Strict):
        any: list[Node] = Field(min_length=1, max_length=100)

    class Not(_Strict):
        not_: Node = Field(alias="not")
        model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)

    Node = Annotated[Union[Annotated[All, Tag("~all")], Annotated[Any_, Tag("~any")], Annotated[Not, Tag("~not")],
                           Annotated[leaf, Tag("~leaf")]], Discriminator(_node_kind)]
    for model, name in ((All, "All"), (Any_, "Any"), (Not, "Not")):
        model.__name__ = model.__qualname__ = f"{leaf.__name__.removesuffix('Leaf')}{name}"   # ItemAll, RequestNot
    for model in (All, Any_, Not):
        model.model_rebuild(_types_namespace={"Node": Node})
    return Node


ItemFilter = _tree(ItemLeaf)
RequestCondition = _tree(RequestLeaf)


class Window(_Strict):
    """When a rule applies: from `start` (inclusive) to `end` (exclusive). A time without an offset is
    read in `timezone` (an IANA name)."""

    start: datetime | None = None
    end: datetime | None = None
    timezone: Text(64, 1) = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin)") from None
        return name

    @model_validator(mode="after")
    def _ordered(self):
        if self.start is None and self.end is None:
            raise ValueError("a window needs a start, an end or both")
        if self.start is not None and self.end is not None and self.bounds()[0] >= self.bounds()[1]:
            raise ValueError("the window ends before it starts")
        return self

    def bounds(self) -> tuple[float, float]:
        """(start, end) as epoch seconds; an open side is +-inf."""
        zone = ZoneInfo(self.timezone)

        def epoch(t: datetime | None, default: float) -> float:
            if t is None:
                return default
            return (t if t.tzinfo else t.replace(tzinfo=zone)).timestamp()
        return epoch(self.start, float("-inf")), epoch(self.end, float("inf"))


class _Rule(_Strict):
    id: Id
    label: Label
    surfaces: list[Text(64, 1)] = Field(min_length=1, max_length=20, description="the surfaces it applies on")
    when: RequestCondition | None = Field(None, description="a condition on the request")
    window: Window | None = None
    priority: int = Field(0, ge=-1000, le=1000, description="higher wins a conflict")


class Pin(_Rule):
    """This SKU at this slot (1 = first)."""
    kind: Literal["pin"]
    sku: Text(128, 1)
    slot: int = Field(ge=1, le=50)


class Boost(_Rule):
    """Items matching `filter` get their relevance multiplied by `factor` (> 1)."""
    kind: Literal["boost"]
    filter: ItemFilter
    factor: float = Field(gt=1, le=100)


class Bury(_Rule):
    """Items matching `filter` get their relevance multiplied by `factor` (between 0 and 1)."""
    kind: Literal["bury"]
    filter: ItemFilter
    factor: float = Field(gt=0, lt=1)


class Block(_Rule):
    """Items matching `filter` are never shown (not even as a fallback or a pin)."""
    kind: Literal["block"]
    filter: ItemFilter


class MarginFloor(_Rule):
    """At least `at_least` slots with margin >= `margin`, or (`average`) the rail's mean margin >= `margin`."""
    kind: Literal["margin_floor"]
    margin: float = Field(ge=0, le=1)
    at_least: int | None = Field(None, ge=1, le=50)
    average: bool = False

    @model_validator(mode="after")
    def _one_form(self):
        if (self.at_least is None) == (not self.average):
            raise ValueError("a margin floor sets either at_least (slots) or average: true, not both")
        return self


class Cap(_Rule):
    """At most `max` items sharing one brand (or category)."""
    kind: Literal["cap"]
    by: Literal["brand", "category"]
    max: int = Field(ge=1, le=50)


class Quota(_Rule):
    """`slots` slots reserved for items matching `filter` (a campaign)."""
    kind: Literal["quota"]
    filter: ItemFilter
    slots: int = Field(ge=1, le=50)


Rule = Annotated[Union[Pin, Boost, Bury, Block, MarginFloor, Cap, Quota], Field(discriminator="kind")]
KINDS = ("pin", "boost", "bury", "block", "margin_floor", "cap", "quota")


class RuleSet(_Strict):
    """A merchandising rule set: what `recsys rules validate` and POST /v1/admin/rules take."""

    name: Text(200, 1)
    description: Text(2000) = ""
    rules: list[Rule] = Field(max_length=500)

    @model_validator(mode="after")
    def _unique_ids(self):
        seen = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice")
            seen.add(rule.id)
        return self


def json_schema() -> dict:
    schema = RuleSet.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://recsys.dev/schemas/rule-set.json"
    return schema


def error_path(loc: tuple) -> str:
    """A JSON path (`$.rules[2].filter.all[0]`) from a pydantic location, without union tags."""
    path = "$"
    for i, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith("~") or (part in KINDS and i >= 2 and loc[i - 2] == "rules" and isinstance(loc[i - 1], int)):
            continue
        else:
            path += "." + ("in" if part == "in_" else "not" if part == "not_" else part)
    return path


def validate(document: Any, surfaces: list[str] | None = None) -> tuple[RuleSet | None, list[dict]]:
    """(the rule set, []) or (None, [{path, reason}, ...]) with every error found. `surfaces`: the
    configured surfaces a rule may name (checked on the document as given, beside the schema)."""
    errors = []
    try:
        ruleset = RuleSet.model_validate(document)
    except ValidationError as exc:
        ruleset = None
        errors = [{"path": error_path(e["loc"]), "reason": e["msg"].removeprefix("Value error, ")}
                  for e in exc.errors(include_url=False)]
    rules = document.get("rules") if isinstance(document, dict) else None
    if surfaces is not None and isinstance(rules, list):
        for i, rule in enumerate(rules):
            named = rule.get("surfaces") if isinstance(rule, dict) else None
            for j, name in enumerate(named if isinstance(named, list) else []):
                if isinstance(name, str) and name not in surfaces:
                    errors.append({"path": f"$.rules[{i}].surfaces[{j}]",
                                   "reason": f"unknown surface {name!r}; one of {', '.join(surfaces)}"})
    return (None, errors) if errors else (ruleset, [])
