"""What every managed service offers: start, stop and a health check."""

from __future__ import annotations

import re
from dataclasses import dataclass


def redact(dsn: str | None) -> str | None:
    """`dsn` (a Postgres DSN, a Redis URL...) with any password replaced by ***: URL userinfo,
    `?password=` and key/value `password=`. Print or log a DSN only through this."""
    if not dsn:
        return dsn
    dsn = re.sub(r"(://[^:@/?#\s]*):[^@/?#\s]*@", r"\1:***@", dsn)
    return re.sub(r"(?i)\b(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*)", r"\1***", dsn)


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
