"""The process's one pooled upstream client: httpx on the aiohttp transport.

Requests are handed straight to the transport: the AsyncClient's own layers (URL merging,
auth and redirect handling, cookie extraction) cost about a third of a request's CPU on the
hot path and do nothing for a gateway talking to its own nodes."""

from __future__ import annotations

import httpx
from httpx_aiohttp import AiohttpTransport

HEADERS = [(b"content-type", b"application/json"), (b"accept", b"*/*")]


class UpstreamClient:
    def __init__(self, *, connect_s: float, read_s: float, max_connections: int = 1000) -> None:
        self.transport = AiohttpTransport(
            limits=httpx.Limits(max_connections=max_connections, keepalive_expiry=30)
        )
        self._timeout = {"connect": connect_s, "read": read_s, "write": read_s, "pool": connect_s}

    async def post(self, url: str, body: bytes) -> httpx.Response:
        """Send; the answer's body is still unread (`aread()` or iterate `.stream`, then
        `aclose()`). Raises httpx.TransportError subclasses for connection problems."""
        request = httpx.Request(
            "POST", url, content=body, headers=HEADERS, extensions={"timeout": self._timeout}
        )
        return await self.transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self.transport.aclose()
