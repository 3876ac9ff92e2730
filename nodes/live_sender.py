"""The thread that sends the console's events (nodes.live_events) to the channel layer.

A probe cycle or an agent reading hands its event over and goes on: one event loop thread
per process sends them in order over the channel layer's kept connection (a group_send
through async_to_sync paid a new loop and a new Redis connection each time: about 40 ms on
the 2-core development VM, against 10 ms here). The queue is bounded: when the layer cannot
keep up, events are dropped with a warning, never held against the caller."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

QUEUE_LIMIT = 1000
SEND_TIMEOUT_S = 5.0


class Sender:
    def __init__(self, group: str) -> None:
        self.group = group
        self._lock = threading.Lock()
        self._pid = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Mapping[str, Any]] | None = None

    def put(self, event: Mapping[str, Any]) -> None:
        loop, queue = self._started()
        loop.call_soon_threadsafe(self._offer, queue, event)

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every event handed over so far was sent or given up (for tests, and a
        process about to exit)."""
        loop, queue = self._started()
        asyncio.run_coroutine_threadsafe(queue.join(), loop).result(timeout_s)

    @staticmethod
    def _offer(queue: asyncio.Queue[Mapping[str, Any]], event: Mapping[str, Any]) -> None:
        try:
            queue.put_nowait(event)
        except asyncio.QueueFull:
            log.warning("console events back up; %s for %s dropped", event["type"], _about(event))

    def _started(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Queue[Mapping[str, Any]]]:
        with self._lock:
            # A new pid is a forked child (Celery's prefork pool): the parent's thread is not
            # running here, so start one of its own.
            if self._pid != os.getpid() or self._loop is None or self._queue is None:
                loop = asyncio.new_event_loop()
                queue: asyncio.Queue[Mapping[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
                threading.Thread(
                    target=self._run, args=(loop, queue), name="console-events", daemon=True
                ).start()
                self._loop, self._queue, self._pid = loop, queue, os.getpid()
                atexit.register(self._flush_at_exit)
            return self._loop, self._queue

    def _flush_at_exit(self) -> None:
        # A command that changed a node (onboard, config apply) exits right after: give its
        # events a moment to go out.
        try:
            self.flush(timeout_s=2.0)
        except Exception as exc:  # a layer that hangs: the process exits anyway
            log.warning("console events not all sent before exit: %r", exc)

    def _run(
        self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Mapping[str, Any]]
    ) -> None:
        asyncio.set_event_loop(loop)
        loop.create_task(self._drain(queue))
        loop.run_forever()

    async def _drain(self, queue: asyncio.Queue[Mapping[str, Any]]) -> None:
        while True:
            event = await queue.get()
            try:
                layer = get_channel_layer()
                if layer is not None:
                    await asyncio.wait_for(
                        layer.group_send(self.group, dict(event)), SEND_TIMEOUT_S
                    )
            except Exception as exc:  # the layer's Redis down, full, or misconfigured: log, go on
                log.warning(
                    "console event %s for %s not sent: %s", event["type"], _about(event), exc
                )
            finally:
                queue.task_done()


def _about(event: Mapping[str, Any]) -> str:
    return str(event.get("node", "the cluster"))
