"""Waking queued requests when a slot frees, instead of only polling for it.

Every process subscribes (one Redis connection, opened the first time one of its requests
waits in a queue) to `clawdbot:freed:<node>`, which the RELEASE script publishes when it
frees a slot or a place on a node whose queue is not empty. On each message a process wakes
its own longest-waiting request for that node, which asks Redis again at once; only the
request first in the node's queue, across all processes, gets the slot (admission.ADMIT).

Waking one request per process and message, not all of them, keeps a freed slot from
setting off one admission call per waiting request. Messages can be lost (Redis restarted,
the subscription reconnecting, a lease that lapsed with its process): the waiting requests
still poll, just less often, so nothing waits on a message alone.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import redis.asyncio as aredis
from django.conf import settings

from clawdbot_site.redis_client import KEY_PREFIX

log = logging.getLogger(__name__)
CHANNEL_PREFIX = KEY_PREFIX + "freed:"
RECONNECT_S = 1.0


@dataclass(eq=False)
class Place:
    """One request waiting in one node's queue, in this process."""

    node: str
    waker: asyncio.Future[None] | None = field(default=None, repr=False)


class QueueSignals:
    def __init__(self) -> None:
        self._places: dict[str, list[Place]] = {}
        self._listener: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()  # set while the subscription is up (for tests)

    def enter(self, node: str) -> Place:
        """A request joins `node`'s queue: it is woken after those that joined before it."""
        if self._listener is None:
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
        loop = asyncio.get_running_loop()
        place.waker = waker = loop.create_future()
        timer = loop.call_later(timeout_s, _wake, waker)
        try:
            await waker
        finally:
            timer.cancel()
            place.waker = None

    def freed(self, node: str) -> None:
        """A slot or place freed on `node`: wake the longest-waiting request that is asleep
        (one already asking Redis needs no wake-up)."""
        for place in self._places.get(node, ()):
            if place.waker is not None and not place.waker.done():
                place.waker.set_result(None)
                return

    async def _listen(self) -> None:
        while True:
            client = aredis.Redis.from_url(settings.REDIS_URL)  # no read timeout: it idles
            pubsub = client.pubsub()
            try:
                await pubsub.psubscribe(CHANNEL_PREFIX + "*")
                self.subscribed.set()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if message is None:
                        continue
                    channel = message["channel"]
                    if isinstance(channel, bytes):
                        channel = channel.decode()
                    self.freed(channel.removeprefix(CHANNEL_PREFIX))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: the requests poll meanwhile
                log.warning("queue wake-ups unavailable, reconnecting: %s", exc)
            finally:
                self.subscribed.clear()
                await pubsub.aclose()
                await client.aclose()
            await asyncio.sleep(RECONNECT_S)

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None


def _wake(waker: asyncio.Future[None]) -> None:
    if not waker.done():
        waker.set_result(None)
