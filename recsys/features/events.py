"""The storefront event schema, and validation that turns bad input into a reason instead of a crash."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

MAX_CLOCK_SKEW = timedelta(minutes=10)


class EventType(str, Enum):
    product_viewed = "product_viewed"
    add_to_cart = "add_to_cart"
    purchase_completed = "purchase_completed"


class EventContext(BaseModel):
    """Set when the interaction came from a recommendation slot (attribution)."""

    model_config = ConfigDict(extra="forbid")
    surface: str | None = Field(default=None, max_length=64)
    request_id: str | None = Field(default=None, max_length=64)
    slot: int | None = Field(default=None, ge=0, le=99)


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=True)

    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1, max_length=64)
    type: EventType
    user_id: str = Field(min_length=1, max_length=128)
    session_id: str | None = Field(default=None, max_length=128)
    sku: str = Field(min_length=1, max_length=64)
    ts: AwareDatetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    device: str | None = Field(default=None, max_length=32)
    geo: str | None = Field(default=None, max_length=16)
    price: float | None = Field(default=None, ge=0)
    quantity: int = Field(default=1, ge=1, le=1000)
    order_id: str | None = Field(default=None, max_length=64)
    context: EventContext | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Event":
        if self.type == EventType.purchase_completed.value and not self.order_id:
            raise ValueError("purchase_completed needs an order_id")
        if self.ts > datetime.now(timezone.utc) + MAX_CLOCK_SKEW:
            raise ValueError(f"ts {self.ts.isoformat()} is in the future")
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
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_event(raw: Any) -> tuple[Event | None, str | None]:
    """(event, None) when `raw` (bytes, str or dict) is a valid event, else (None, reason)."""
    try:
        if isinstance(raw, (bytes, bytearray)):
            raw = raw.decode("utf-8")
        if isinstance(raw, str):
            raw = json.loads(raw)
        if not isinstance(raw, dict):
            return None, f"event must be a JSON object, got {type(raw).__name__}"
        return Event.model_validate(raw), None
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc.msg} at position {exc.pos}"
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except ValidationError as exc:
        return None, reason_of(exc)
