"""The admission scripts against the real Redis: ejection and its growing cooldown, the
first-come queue and its places, and freeing what an unread admission granted."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
import redis

from clawdbot_site import redis_keys
from gateway.admission import LEASE_TTL_MS, QUEUE_TTL_MS, Admission, EjectionPolicy
from gateway.leases import Lease
from gateway.proxy import Proxy
from gateway.snapshot import Route
from tests.gateway.admitting import admission_on, admit, route

pytestmark = pytest.mark.slow  # real servers and processes


async def _fail_until_ejected(admission: Admission, node: Route) -> int:
    """Admit and fail requests on the node until it is ejected; the cooldown in ms."""
    for _ in range(admission.policy.after_failures):
        assert (await admit(admission, "l", node)).status == "ok"
        cooldown = await admission.release(Lease("l", node.node.name), outcome="fail")
        if cooldown:
            return cooldown
    raise AssertionError("the node was not ejected")


async def _succeed(admission: Admission, node: Route) -> None:
    assert (await admit(admission, "ok", node)).status == "ok"
    await admission.release(Lease("ok", node.node.name), outcome="ok")


async def test_a_node_that_fails_again_after_recovering_gets_a_longer_cooldown(
    redis_client: redis.Redis,
) -> None:
    policy = EjectionPolicy(after_failures=2, base_cooldown_ms=1_000, max_cooldown_ms=3_000)
    flaky = route("flaky")
    async with admission_on(policy=policy) as admission:
        cooldowns = []
        for _ in range(3):
            cooldowns.append(await _fail_until_ejected(admission, flaky))
            # The cooldown ends and the node serves a request well, then fails again.
            redis_client.hset(redis_keys.ejection("flaky"), "until", 0)
            await _succeed(admission, flaky)
        assert cooldowns == [1_000, 2_000, 3_000]  # doubling, up to the cap
        # A success still ends a run of failures: one failure alone does not eject.
        await _succeed(admission, flaky)
        assert (await admit(admission, "x", flaky)).status == "ok"
        assert await admission.release(Lease("x", "flaky"), outcome="fail") == 0


async def test_a_node_failing_all_its_requests_at_once_is_ejected_once(
    redis_client: redis.Redis,
) -> None:
    # A node dies with seven requests in flight: their failures come in together, after
    # the third ejected it. The cooldown is the first one's, not doubled twice over.
    policy = EjectionPolicy(after_failures=3, base_cooldown_ms=1_000, max_cooldown_ms=60_000)
    dying = route("dying", max_concurrent=8)
    async with admission_on(policy=policy) as admission:
        for i in range(7):
            assert (await admit(admission, f"l{i}", dying)).status == "ok"
        cooldowns = [
            await admission.release(Lease(f"l{i}", "dying"), outcome="fail") for i in range(7)
        ]
        assert cooldowns == [0, 0, 1_000, 0, 0, 0, 0]
        assert redis_client.hget(redis_keys.ejection("dying"), "count") == b"1"
        # Failing again once back is a repeat: the cooldown doubles.
        redis_client.hset(redis_keys.ejection("dying"), "until", 0)
        assert await _fail_until_ejected(admission, dying) == 2_000


async def test_the_queue_is_first_come_first_served(redis_client: redis.Redis) -> None:
    busy = route("busy", max_concurrent=1, queue_size=4)
    async with admission_on() as admission:

        async def status(lease: str, queued_at: str = "") -> str:
            return (await admit(admission, lease, busy, queued_at=queued_at)).status

        assert await status("a") == "ok"
        assert await status("b") == "queued"
        assert await status("c") == "queued"
        await admission.release(Lease("a", "busy"), outcome="ok")
        # The slot is free, but two requests were waiting for it: a newcomer queues behind
        # them, and of the two the later one keeps waiting while the first takes it.
        assert await status("d") == "queued"
        assert await status("c", queued_at="busy") == "queued"
        assert await status("b", queued_at="busy") == "ok"
        await admission.release(Lease("b", "busy"), outcome="ok")
        assert await status("d", queued_at="busy") == "queued"
        assert await status("c", queued_at="busy") == "ok"
        # A waiting request that leaves gives up its place.
        await admission.release(Lease("d", "busy", queued=True), outcome="neutral")
        assert redis_client.zcard(redis_keys.queue_order("busy")) == 0
        assert redis_client.zcard(redis_keys.queue("busy")) == 0


async def test_a_lapsed_place_in_the_queue_frees_it(redis_client: redis.Redis) -> None:
    # A gateway process killed while its request waited: the place lapses with its lease.
    busy = route("busy", max_concurrent=1, queue_size=1)
    async with admission_on() as admission:
        first, waiting = await admit(admission, "a", busy), await admit(admission, "b", busy)
        assert (first.status, waiting.status) == ("ok", "queued")
        redis_client.zadd(redis_keys.queue("busy"), {"b": 1})  # its expiry long past
        await admission.release(Lease("a", "busy"), outcome="ok")
        assert (await admit(admission, "c", busy)).status == "ok"
        assert redis_client.zcard(redis_keys.queue_order("busy")) == 0


async def test_a_retry_queues_on_the_same_gpu_type_when_it_must_queue(
    redis_client: redis.Redis,
) -> None:
    fast = route("h100", max_concurrent=1, queue_size=4, gpu="H100", weight=4.0)
    slow = route("a10", max_concurrent=1, queue_size=4, gpu="A10", weight=1.0)
    async with admission_on() as admission:
        assert (await admit(admission, "f", fast)).status == "ok"
        assert (await admit(admission, "s", slow)).status == "ok"
        # Both full: the faster node has the shorter expected wait, but a retry after an A10
        # failed prefers another A10 for its place in a queue too.
        verdict = await admit(admission, "r", fast, slow, prefer_gpu="A10")
        assert (verdict.status, verdict.node) == ("queued", "a10")
        verdict = await admit(admission, "n", fast, slow)
        assert (verdict.status, verdict.node) == ("queued", "h100")


async def test_a_place_in_a_queue_lapses_soon_and_is_not_renewed(
    redis_client: redis.Redis,
) -> None:
    # A process that dies with requests queued must not hold back freed slots for a whole
    # lease: its places live only as long as their polls keep them.
    busy = route("busy", max_concurrent=1, queue_size=4)
    async with admission_on() as admission:
        await admit(admission, "a", busy)
        await admit(admission, "b", busy)
        now_ms = time.time() * 1000
        place = redis_client.zscore(redis_keys.queue("busy"), "b")
        slot = redis_client.zscore(redis_keys.slots("busy"), "a")
        assert place is not None and place <= now_ms + QUEUE_TTL_MS + 1000
        assert slot is not None and slot >= now_ms + LEASE_TTL_MS - 1000
        await admission.renew([Lease("b", "busy", queued=True), Lease("a", "busy")])
        assert redis_client.zscore(redis_keys.queue("busy"), "b") == place
        assert redis_client.zscore(redis_keys.slots("busy"), "a") >= slot  # type: ignore[operator]


async def test_forget_frees_whatever_an_unread_admission_granted(
    redis_client: redis.Redis,
) -> None:
    busy = route("busy", max_concurrent=1, queue_size=4)
    async with admission_on() as admission:
        await admit(admission, "a", busy)
        await admit(admission, "b", busy)
        await admission.forget("a", ["other", "busy"])
        await admission.forget("b", ["busy"])
        for key in (redis_keys.slots, redis_keys.queue, redis_keys.queue_order):
            assert redis_client.zcard(key("busy")) == 0


async def test_a_client_leaving_during_admission_leaves_no_slot_taken() -> None:
    """The proxy side: cancelled while the admission call is in flight, it asks Redis to
    forget the lease on every node the call could have granted."""
    in_flight = asyncio.Event()
    forgotten: list[tuple[str, list[str]]] = []

    class PendingAdmission:
        async def admit(self, **kwargs: object) -> None:
            in_flight.set()
            await asyncio.Event().wait()  # the reply never comes before the cancel

        async def forget(self, lease: str, nodes: list[str]) -> None:
            forgotten.append((lease, nodes))

    proxy = Proxy(SimpleNamespace(admission=PendingAdmission()), send=None)  # type: ignore[arg-type]
    routes = (route("gpu1"), route("gpu2"))
    task = asyncio.ensure_future(proxy._admit(lease="L", routes=routes, check_rate=False))
    await in_flight.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert forgotten == [("L", ["gpu1", "gpu2"])]


async def test_rate_windows_expire_though_only_created_ones_get_the_expiry(
    redis_client: redis.Redis,
) -> None:
    node = route("gpu1")
    async with admission_on() as admission:
        for lease in ("a", "b"):
            verdict = await admission.admit(
                lease=lease, routes=[node], key_id=7, rpm=100, tpm=10_000,
                estimated_tokens=50, check_rate=True,
            )  # fmt: skip
            assert verdict.status == "ok"
        await admission.release(Lease("a", "gpu1"), outcome="ok", key_id=7, token_delta=-20)
        windows = list(redis_client.scan_iter(redis_keys.rate_windows(key_id="7")))
        assert len(windows) == 2  # requests and tokens, this minute
        for window in windows:
            assert 0 < redis_client.pttl(window) <= 130_000
        assert sorted(int(redis_client.get(w) or 0) for w in windows) == [2, 80]
