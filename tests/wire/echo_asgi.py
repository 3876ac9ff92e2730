"""The gateway's ASGI application with one WebSocket consumer added, an echo at /ws/echo, for
the test that a handshake handed to daphne by wire/http_server.py is served to its close (the
product has no consumer yet). Everything else is served as clawdbot_site.asgi serves it."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.routing import ProtocolTypeRouter

from clawdbot_site.asgi import http_router, websocket_refused


class Echo(AsyncWebsocketConsumer):
    channel_layer_alias = "unconfigured"  # no groups here: the echo needs no channel layer

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=text_data, bytes_data=bytes_data)


echo = Echo.as_asgi()


async def websocket_router(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["path"] == "/ws/echo":
        await echo(scope, receive, send)
    else:
        await websocket_refused(scope, receive, send)


application = ProtocolTypeRouter({"http": http_router, "websocket": websocket_router})
