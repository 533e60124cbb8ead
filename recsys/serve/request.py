"""What a storefront asks for, parsed once and passed through every stage, and what stages hand on."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from recsys.release.arms import Arm


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
    arm: Arm | None = None   # the models that serve it, assigned by the recommender (recsys/release/arms.py)
    ts: float | None = None  # when it was asked (epoch seconds): the impression's ts; None = now

    @property
    def context_skus(self) -> list[str]:
        return self.skus + [s for s in self.cart if s not in self.skus]


@dataclass
class Candidate:
    """One SKU as one source proposes it."""

    sku: str
    score: float
    source: str
    reasons: list[str] = field(default_factory=list)


@dataclass
class Pooled:
    """One SKU in the candidate pool, with every source that proposed it: what a ranker scores."""

    sku: str
    source: str                                            # the source that ranked it highest within its quota
    ranks: dict[str, int] = field(default_factory=dict)    # source -> position in its list (0 = best)
    scores: dict[str, float] = field(default_factory=dict)  # source -> the source's own score
    reasons: list[str] = field(default_factory=list)


@dataclass
class Score:
    """A ranker's verdict on one candidate, with what made it (feature or source -> contribution)."""

    value: float
    contributions: dict[str, float] = field(default_factory=dict)
