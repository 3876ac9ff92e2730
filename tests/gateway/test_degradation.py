"""The degradation tick against the real Redis: two processes' counts make one window, the
tier they share moves once however many propose it, and old seconds leave the window."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis
from django.conf import settings

from clawdbot_site import redis_keys
from gateway.degradation import Degradation
from gateway.tiers import Tier, TierPolicy
from wire.resp import RespClient

pytestmark = pytest.mark.slow  # real Redis

POLICY = TierPolicy(min_requests=10, min_dwell_s=0)
WINDOW_S = 10


@pytest.fixture
async def processes(redis_client: redis.Redis) -> AsyncIterator[tuple[Degradation, Degradation]]:
    """Two gateway processes' degradation state, each on its own connection."""
    clients = [RespClient(settings.REDIS_URL) for _ in range(2)]
    yield (
        Degradation(clients[0], POLICY, window_s=WINDOW_S, warm_at=0.01),
        Degradation(clients[1], POLICY, window_s=WINDOW_S, warm_at=0.01),
    )
    for client in clients:
        client.close()


def count(process: Degradation, ok: int, failed: int) -> None:
    for _ in range(ok):
        process.count(False)
    for _ in range(failed):
        process.count(True)


async def test_the_window_adds_up_every_process_and_one_of_them_moves_the_tier(
    processes: tuple[Degradation, Degradation], redis_client: redis.Redis
) -> None:
    a, b = processes
    now = time.time()
    count(a, ok=8, failed=0)
    assert await a.tick(now) is None  # 8 requests: too few to judge
    assert (a.tier, a.window.requests, a.warm) == (Tier.NORMAL, 8, False)
    count(b, ok=0, failed=4)
    change = await b.tick(now)  # 4 failures in 12 requests: 33 %
    assert change is not None and (change.before, change.after) == (Tier.NORMAL, Tier.STATIC)
    assert (change.window.requests, change.window.failures) == (12, 4)
    assert await a.tick(now) is None  # a reads the shared tier: nothing left to change
    assert a.tier == b.tier == Tier.STATIC and a.warm
    assert redis_client.hget(redis_keys.TIER, "tier") == b"3"


async def test_a_change_proposed_by_two_processes_at_once_is_made_once(
    processes: tuple[Degradation, Degradation],
) -> None:
    a, b = processes
    now = time.time()
    count(a, ok=10, failed=10)
    count(b, ok=10, failed=10)
    changes = [c for c in await asyncio.gather(a.tick(now), b.tick(now)) if c is not None]
    assert len(changes) == 1 and changes[0].after == Tier.STATIC
    assert await a.tick(now) is None and await b.tick(now) is None
    assert a.tier == b.tier == Tier.STATIC


async def test_seconds_older_than_the_window_stop_counting(
    processes: tuple[Degradation, Degradation],
) -> None:
    a, _ = processes
    start = time.time()
    count(a, ok=0, failed=20)
    change = await a.tick(start)
    assert change is not None and change.after == Tier.STATIC
    await a.tick(start + WINDOW_S - 1)  # the failing second is still in the window
    assert (a.window.failures, a.tier) == (20, Tier.STATIC)
    count(a, ok=50, failed=0)
    change = await a.tick(start + WINDOW_S)  # it left: 50 good requests, no failure
    assert (a.window.requests, a.window.failures) == (50, 0)
    assert change is not None and (change.before, change.after) == (Tier.STATIC, Tier.NORMAL)


async def test_counts_are_kept_for_the_next_tick_while_redis_cannot_be_reached(
    redis_client: redis.Redis,
) -> None:
    dead = RespClient("redis://127.0.0.1:1/0", timeout_s=0.5)
    process = Degradation(dead, POLICY, window_s=WINDOW_S, warm_at=0.01)
    count(process, ok=3, failed=2)
    with pytest.raises(Exception, match="unreachable"):
        await process.tick()
    live = RespClient(settings.REDIS_URL)
    try:
        process._resp = live  # Redis is back
        await process.tick()
        assert (process.window.requests, process.window.failures) == (5, 2)
    finally:
        live.close()
        dead.close()
