"""What a storefront asks for, parsed once and passed through every stage."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass
class RecRequest:
    surface: str
    user_id: str | None = None
    session_id: str | None = None
    skus: list[str] = field(default_factory=list)      # the viewed SKU on a product page
    cart: list[str] = field(default_factory=list)
    device: str | None = None
    geo: str | None = None
    k: int = 12
    explain: bool = False
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def context_skus(self) -> list[str]:
        return self.skus + [s for s in self.cart if s not in self.skus]


@dataclass
class Candidate:
    sku: str
    score: float
    source: str
    reasons: list[str] = field(default_factory=list)
