"""What every managed service offers: start, stop and a health check."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Health:
    name: str
    ok: bool
    where: str        # the address clients use
    managed: bool     # True when recsys started it (and so `services down` stops it)
    detail: str = ""

    def line(self) -> str:
        state = "up" if self.ok else "DOWN"
        owner = "embedded" if self.managed else "external"
        return f"{self.name:<9} {state:<5} {owner:<9} {self.where}  {self.detail}".rstrip()
