"""Queued requests woken through Redis pub/sub when a slot frees."""

from __future__ import annotations

import asyncio

import pytest
import redis
from django.conf import settings

from clawdbot_site import redis_keys
from gateway.leases import Lease
from gateway.queue_signals import QueueSignals
from tests.gateway.admitting import admission_on, admit, route

pytestmark = pytest.mark.slow  # real servers and processes

LONG_S = 30.0  # a wait that only a wake-up ends within the test's time


async def _until(condition_met: asyncio.Future[None] | asyncio.Task[None]) -> None:
    await asyncio.wait_for(asyncio.shield(condition_met), timeout=5)


async def test_a_freed_slot_wakes_the_longest_waiting_request_first(
    redis_client: redis.Redis,
) -> None:
    signals = QueueSignals()
    first, second = signals.enter("gpu1"), signals.enter("gpu1")
    try:
        await asyncio.wait_for(signals.subscribed.wait(), timeout=5)
        woken_first = asyncio.ensure_future(signals.wait(first, LONG_S))
        woken_second = asyncio.ensure_future(signals.wait(second, LONG_S))
        for _ in range(100):  # bounded: until both have gone to sleep
            if first.waker is not None and second.waker is not None:
                break
            await asyncio.sleep(0)
        redis_client.publish(redis_keys.freed_channel("gpu1"), "")
        await _until(woken_first)
        assert not woken_second.done()  # one slot, one wake-up per process
        redis_client.publish(redis_keys.freed_channel("gpu2"), "")  # another node's queue
        redis_client.publish(redis_keys.freed_channel("gpu1"), "")
        await _until(woken_second)
    finally:
        signals.leave(first)
        signals.leave(second)
        await signals.aclose()


async def test_releasing_a_slot_announces_it_only_to_a_queue_with_waiters(
    redis_client: redis.Redis,
) -> None:
    busy = route("busy", max_concurrent=1, queue_size=4)
    listener = redis_client.pubsub()
    listener.psubscribe(redis_keys.FREED_PATTERN)
    assert listener.get_message(timeout=5)["type"] == "psubscribe"  # type: ignore[index]
    try:
        async with admission_on() as admission:
            assert (await admit(admission, "a", busy)).status == "ok"
            await admission.release(Lease("a", "busy"), outcome="ok")  # nobody waits
            redis_client.publish(redis_keys.freed_channel("marker"), "")
            assert (await admit(admission, "b", busy)).status == "ok"
            assert (await admit(admission, "c", busy)).status == "queued"
            await admission.release(Lease("b", "busy"), outcome="ok")  # "c" waits
        channels = [listener.get_message(timeout=5) for _ in range(2)]
        # In order: had the first release announced anything, it would come before the marker.
        assert [m["channel"] for m in channels if m] == [
            redis_keys.freed_channel("marker").encode(),
            redis_keys.freed_channel("busy").encode(),
        ]
    finally:
        listener.close()


async def test_a_wake_up_that_finds_its_request_busy_is_kept_for_it(
    redis_client: redis.Redis,
) -> None:
    # The oldest request is asking Redis already (its answer may predate the freed slot): the
    # wake-up waits for its next sleep; a second one goes to the next request along.
    signals = QueueSignals()
    oldest, next_one = signals.enter("gpu1"), signals.enter("gpu1")
    try:
        signals.freed("gpu1")  # neither is asleep
        sleeping = asyncio.ensure_future(signals.wait(next_one, LONG_S))
        for _ in range(100):  # bounded: until it has gone to sleep
            if next_one.waker is not None:
                break
            await asyncio.sleep(0)
        signals.freed("gpu1")
        await _until(sleeping)
        await asyncio.wait_for(signals.wait(oldest, LONG_S), timeout=5)  # returns at once
        signals.polled(oldest)
        assert not oldest.pending and not oldest.claimed
    finally:
        signals.leave(oldest)
        signals.leave(next_one)
        await signals.aclose()


async def test_a_redis_user_without_channel_permission_still_releases(
    redis_client: redis.Redis,
) -> None:
    # Wake-ups need the channel permission; without it admission must still work.
    user = "clawdbot-test-nochannels"
    redis_client.execute_command(
        "ACL", "SETUSER", user, "reset", "on", ">pw", "~*", "+@all", "resetchannels"
    )
    scheme, rest = settings.REDIS_URL.split("://", 1)
    busy = route("busy", max_concurrent=1, queue_size=4)
    try:
        async with admission_on(f"{scheme}://{user}:pw@{rest}") as admission:
            assert (await admit(admission, "a", busy)).status == "ok"
            assert (await admit(admission, "b", busy)).status == "queued"
            await admission.release(Lease("a", "busy"), outcome="ok")  # would publish
        assert redis_client.zcard(redis_keys.slots("busy")) == 0
    finally:
        redis_client.execute_command("ACL", "DELUSER", user)
