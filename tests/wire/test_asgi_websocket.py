"""The ASGI application refuses a WebSocket at the handshake. Under daphne no WebSocket scope
reaches it (wire/http_server.py declines upgrades: see test_http_server.py); under a server
that hands the socket to the application, the handshake must be refused, not fail with "no
application configured for scope type 'websocket'"."""

from __future__ import annotations

from channels.testing import WebsocketCommunicator

from clawdbot_site.asgi import application


async def test_a_websocket_is_closed_at_the_handshake() -> None:
    communicator = WebsocketCommunicator(application, "/v1/realtime")
    connected, _ = await communicator.connect(timeout=5)
    assert not connected
    await communicator.wait(timeout=5)
