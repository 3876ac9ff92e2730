"""Waking queued requests when a slot frees, instead of only polling for it.

Every process subscribes (one Redis connection, opened the first time one of its requests
waits in a queue) to `clawdbot:freed:<node>`, which the RELEASE script publishes when it
frees a slot or a place on a node whose queue is not empty. On each message a process wakes
its own longest-waiting request for that node, which asks Redis again at once; only the
request first in the node's queue, across all processes, gets the slot (admission.ADMIT).

Waking one request per process and message, not all of them, keeps a freed slot from
setting off one admission call per waiting request. A message that finds that request busy
(asking Redis already, its answer maybe from before the slot freed) is kept for it: its next
wait returns at once. A second message goes to the next request along.

Messages can be lost (Redis restarted, the subscription reconnecting, a lease that lapsed with
its process), and a slot freeing on another node a request could also use is not announced to
it: the waiting requests still poll (proxy.POLL_MAX_S), so nothing waits on a message alone.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from clawdbot_site import redis_keys
from wire.resp import RespClient, RespError, encode

log = logging.getLogger(__name__)
CHANNEL_PREFIX = redis_keys.FREED_CHANNELS
RECONNECT_S = 1.0
# An idle subscription is pinged this often; a ping unanswered by the next one means a dead
# connection (a firewall that dropped it silently), which is then replaced.
PING_S = 30.0


@dataclass(eq=False)
class Place:
    """One request waiting in one node's queue, in this process."""

    node: str
    waker: asyncio.Future[None] | None = field(default=None, repr=False)
    claimed: bool = False  # a wake-up went to it since its last admission call
    pending: bool = False  # that wake-up came while it was busy: its next wait is skipped


class QueueSignals:
    def __init__(self) -> None:
        self._places: dict[str, list[Place]] = {}
        self._listener: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()  # set while the subscription is up (for tests)

    def enter(self, node: str) -> Place:
        """A request joins `node`'s queue: it is woken after those that joined before it."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.ensure_future(self._listen())
        place = Place(node)
        self._places.setdefault(node, []).append(place)
        return place

    def leave(self, place: Place) -> None:
        places = self._places.get(place.node)
        if places is not None and place in places:
            places.remove(place)
            if not places:
                del self._places[place.node]

    async def wait(self, place: Place, timeout_s: float) -> None:
        """Until a slot on the place's node frees (maybe), or `timeout_s` passes."""
        if place.pending:
            place.pending = False
            return
        loop = asyncio.get_running_loop()
        place.waker = waker = loop.create_future()
        timer = loop.call_later(timeout_s, _wake, waker)
        try:
            await waker
        finally:
            timer.cancel()
            place.waker = None

    def polled(self, place: Place) -> None:
        """The request asked Redis again (and is still waiting): it can be woken again."""
        place.claimed = False

    def freed(self, node: str) -> None:
        """A slot or place freed on `node`: wake the longest-waiting request not already woken
        since it last asked Redis."""
        for place in self._places.get(node, ()):
            if place.claimed:
                continue
            place.claimed = True
            if place.waker is not None and not place.waker.done():
                place.waker.set_result(None)
            else:
                place.pending = True
            return

    async def _listen(self) -> None:
        warned = False
        while True:
            try:
                await self._subscribe_and_dispatch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: the requests poll meanwhile
                # Once an outage (the subscription was up, or this is the first attempt),
                # not once a reconnection attempt.
                if self.subscribed.is_set() or not warned:
                    log.warning("queue wake-ups unavailable, reconnecting: %s", exc)
                    warned = True
            finally:
                self.subscribed.clear()
            await asyncio.sleep(RECONNECT_S)

    async def _subscribe_and_dispatch(self) -> None:
        # Its own connection (wire.resp, not redis-py, whose pub/sub can swallow a
        # cancellation in its read timeout and never stop).
        conn = await RespClient(settings.REDIS_URL).subscribe(redis_keys.FREED_PATTERN, self._push)
        assert conn.lost is not None
        try:
            self.subscribed.set()  # confirmed by Redis: wake-ups flow from here
            while True:
                try:
                    await asyncio.wait_for(asyncio.shield(conn.lost), PING_S)
                except TimeoutError:
                    # Idle: a ping tells a live connection from one a firewall dropped.
                    await asyncio.wait_for(conn.call(encode(("PING",)), conn.loop), PING_S)
                    continue
                raise ConnectionError("Redis closed the subscription")
        finally:
            conn.fail(RespError("subscription closed"))

    def _push(self, message: list[Any]) -> None:
        channel = message[2]
        if isinstance(channel, bytes):
            channel = channel.decode()
        self.freed(channel.removeprefix(CHANNEL_PREFIX))

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None


def _wake(waker: asyncio.Future[None]) -> None:
    if not waker.done():
        waker.set_result(None)
