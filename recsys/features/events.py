"""The storefront event schema, and validation that turns bad input into a reason instead of a crash.

Whatever this schema accepts must fit every store an event reaches (the Postgres log, Redis keys and
hashes, the broker), so a message that passed here can never stop the consumer: text has no control
characters (Postgres refuses NUL) and bounded lengths, numbers are finite and inside their columns'
ranges (`price` is numeric(12,2)), and `ts` lies in a window around now (`IntakeLimits`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Annotated, Any

from pydantic import (AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError,
                      ValidationInfo, field_validator, model_validator)

# Printable text only: no C0/C1 control characters (NUL included) and no lone surrogates, which no
# UTF-8 store can hold. A pattern (checked in pydantic-core's Rust) keeps validation off the Python path.
PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]*$"


def Text(max_length: int, min_length: int = 0):
    """A bounded, printable string: what every text column and Redis key of ours can hold."""
    return Annotated[str, StringConstraints(min_length=min_length, max_length=max_length, pattern=PRINTABLE)]


# numeric(12,2): the largest value that still rounds inside the column.
MAX_PRICE = 9_999_999_999.99


@dataclass(frozen=True)
class IntakeLimits:
    """How far from now an event's `ts` may lie (from `features.intake` in conf/config.yaml)."""

    max_age: timedelta = timedelta(days=365)
    max_clock_skew: timedelta = timedelta(minutes=10)

    @classmethod
    def from_config(cls, cfg) -> "IntakeLimits":
        i = cfg.features.intake
        return cls(max_age=timedelta(days=float(i.max_event_age_days)),
                   max_clock_skew=timedelta(seconds=float(i.max_clock_skew_s)))


DEFAULT_LIMITS = IntakeLimits()


class EventType(str, Enum):
    product_viewed = "product_viewed"
    add_to_cart = "add_to_cart"
    purchase_completed = "purchase_completed"


class EventContext(BaseModel):
    """Set when the interaction came from a recommendation slot (attribution)."""

    model_config = ConfigDict(extra="forbid")
    surface: Text(64) | None = None
    request_id: Text(64) | None = None
    slot: int | None = Field(default=None, ge=0, le=99)


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=True, allow_inf_nan=False)

    event_id: Text(64, 1) = Field(default_factory=lambda: str(uuid.uuid4()),
                                  description="the idempotency key: a retry with the same event_id counts once")
    type: EventType
    user_id: Text(128, 1)
    session_id: Text(128) | None = None
    sku: Text(64, 1)
    ts: AwareDatetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    device: Text(32) | None = None
    geo: Text(16) | None = None
    price: float | None = Field(default=None, ge=0, le=MAX_PRICE)
    quantity: int = Field(default=1, ge=1, le=1000)
    order_id: Text(64) | None = None
    context: EventContext | None = None

    @field_validator("ts")
    @classmethod
    def _in_window(cls, ts: datetime, info: ValidationInfo) -> datetime:
        limits = (info.context or {}).get("limits")
        now = datetime.now(timezone.utc)
        if ts > now + (limits or DEFAULT_LIMITS).max_clock_skew:
            raise ValueError(f"{ts.isoformat()} is in the future")
        # The age window applies to intake (parse_event); trusted code may build historical events.
        if limits is not None and ts < now - limits.max_age:
            raise ValueError(f"{ts.isoformat()} is older than {limits.max_age.days} days")
        return ts

    @model_validator(mode="after")
    def _consistent(self) -> "Event":
        if self.type == EventType.purchase_completed.value and not self.order_id:
            raise ValueError("order_id: purchase_completed needs an order_id")
        return self

    @property
    def epoch(self) -> float:
        return self.ts.timestamp()

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def reason_of(error: ValidationError) -> str:
    """One line naming each bad field and what is wrong with it."""
    parts = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"]) or "event"
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"] and ": " in msg:  # a check across fields names its field first
            where, msg = msg.split(": ", 1)
        if err["type"] == "string_pattern_mismatch":
            msg = "must be printable text (no control characters such as NUL)"
        elif err["type"] == "json_invalid":
            where, msg = "not JSON", msg.removeprefix("Invalid JSON: ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def parse_event(raw: Any, limits: IntakeLimits = DEFAULT_LIMITS) -> tuple[Event | None, str | None]:
    """(event, None) when `raw` (bytes, str or dict) is a valid event, else (None, reason)."""
    context = {"limits": limits}
    try:
        if isinstance(raw, (bytes, bytearray, str)):
            if isinstance(raw, str):
                raw = raw.encode("utf-8", "surrogatepass")
            raw.decode("utf-8")  # a precise reason for bytes that are not text at all
            if not raw.lstrip().startswith(b"{"):
                value = json.loads(raw)
                return None, f"event must be a JSON object, got {type(value).__name__}"
            return Event.model_validate_json(raw, context=context), None
        if not isinstance(raw, dict):
            return None, f"event must be a JSON object, got {type(raw).__name__}"
        return Event.model_validate(raw, context=context), None
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc.msg} at position {exc.pos}"
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except ValidationError as exc:
        return None, reason_of(exc)
