"""The ASGI application refuses a WebSocket at the handshake: no consumer exists yet. Under
daphne, wire/http_server.py hands it handshakes on every path but the data plane's (see
test_http_server.py), and each must be refused, not fail with "no application configured for
scope type 'websocket'"."""

from __future__ import annotations

from channels.testing import WebsocketCommunicator

from clawdbot_site.asgi import application


async def test_a_websocket_is_closed_at_the_handshake() -> None:
    communicator = WebsocketCommunicator(application, "/ws/test")
    connected, _ = await communicator.connect(timeout=5)
    assert not connected
    await communicator.wait(timeout=5)
