"""The console's live feed: a WebSocket for staff sessions that relays the control plane's
events (nodes.live_events) to the browser, one handler per event type."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from nodes.live_events import GROUP

# A WebSocket close code of the private range: the session is not a staff user's.
NOT_STAFF = 4403


class ConsoleConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_staff:
            await self.close(code=NOT_STAFF)
            return
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The feed is one-way: what a browser sends is ignored."""

    async def node_state(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def node_probe(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def node_telemetry(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def cluster_load(self, event: dict[str, Any]) -> None:
        await self.send_json(event)
