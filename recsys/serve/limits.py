"""Input limits the HTTP API enforces before any handler runs: what it accepts must fit every store.

`BodySizeLimit` refuses a body over `serve.max_body_bytes` with 413 before it is parsed: at once from
its Content-Length, or as soon as a chunked body passes the limit. Query text uses the same printable,
bounded rules as events (recsys.features.events.PRINTABLE).
"""

from __future__ import annotations

from typing import Callable

import orjson
from fastapi import HTTPException

DEFAULT_MAX_BODY_BYTES = 1 << 20


class BodySizeLimit:
    """ASGI middleware. The body is read here (bounded), then handed on: the app reads it anyway."""

    def __init__(self, app, limit: Callable[[], int] = lambda: DEFAULT_MAX_BODY_BYTES):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit()
        length = dict(scope["headers"]).get(b"content-length")
        try:
            if length is not None and int(length) > limit:
                return await refuse(send, 413, f"request body over {limit} bytes")
        except ValueError:
            return await refuse(send, 400, "Content-Length is not a number")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":   # the client went away
                return await self.app(scope, _replay([message]), send)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return await refuse(send, 413, f"request body over {limit} bytes")
            more = message.get("more_body", False)
        await self.app(scope, _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}],
                                      receive), send)


def _replay(messages: list[dict], then=None):
    async def receive():
        if messages:
            return messages.pop(0)
        return await then() if then else {"type": "http.disconnect"}
    return receive


async def refuse(send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    """Answer `status` with {"detail": ...} before any handler ran."""
    body = orjson.dumps({"detail": detail})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


def sku_list(field: str, value: str | None, max_count: int, max_length: int = 64) -> list[str]:
    """A comma-separated SKU list from the query, bounded in count and length: 422 naming the field."""
    skus = [s for s in (value or "").split(",") if s]
    if len(skus) > max_count:
        raise HTTPException(422, [{"loc": ["query", field], "type": "too_long",
                                   "msg": f"at most {max_count} SKUs, got {len(skus)}"}])
    for sku in skus:
        if len(sku) > max_length:
            raise HTTPException(422, [{"loc": ["query", field], "type": "string_too_long",
                                       "msg": f"a SKU has at most {max_length} characters"}])
    return skus
