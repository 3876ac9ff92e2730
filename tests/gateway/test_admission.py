"""The admission scripts against the real Redis: ejection and its growing cooldown."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
import redis
from django.conf import settings

from clawdbot_site.redis_client import async_client
from gateway.admission import LEASE_TTL_MS, QUEUE_TTL_MS, Admission, EjectionPolicy
from gateway.proxy import Proxy
from gateway.resp import RespClient
from gateway.snapshot import NodeView, Route


def _route(
    name: str, max_concurrent: int = 4, queue_size: int = 0, gpu: str = "A100", weight: float = 1.0
) -> Route:
    node = NodeView(
        id=1,
        name=name,
        base_url="http://127.0.0.1:9",
        api_kind="ollama",
        gpu_type=gpu,
        gpu_count=1,
        total_vram_gb=80.0,
        max_concurrent=max_concurrent,
        queue_size=queue_size,
        state="READY",
        enabled=True,
        draining=False,
        weight=1.0,
    )
    return Route(node=node, weight=weight)


async def _fail_until_ejected(admission: Admission, route: Route) -> int:
    """Admit and fail requests on the node until it is ejected; the cooldown in ms."""
    for _ in range(admission.policy.after_failures):
        verdict = await admission.admit(
            lease="l", routes=[route], key_id=None, rpm=None, tpm=None,
            estimated_tokens=0, check_rate=False,
        )  # fmt: skip
        assert verdict.status == "ok"
        cooldown = await admission.release(lease="l", node=route.node.name, outcome="fail")
        if cooldown:
            return cooldown
    raise AssertionError("the node was not ejected")


async def _succeed(admission: Admission, route: Route) -> None:
    verdict = await admission.admit(
        lease="ok", routes=[route], key_id=None, rpm=None, tpm=None,
        estimated_tokens=0, check_rate=False,
    )  # fmt: skip
    assert verdict.status == "ok"
    await admission.release(lease="ok", node=route.node.name, outcome="ok")


async def test_a_node_that_fails_again_after_recovering_gets_a_longer_cooldown(
    redis_client: redis.Redis,
) -> None:
    policy = EjectionPolicy(after_failures=2, base_cooldown_ms=1_000, max_cooldown_ms=3_000)
    resp = RespClient(settings.REDIS_URL)
    admission = Admission(async_client(), resp, policy)
    await admission.load()
    route = _route("flaky")
    try:
        cooldowns = []
        for _ in range(3):
            cooldowns.append(await _fail_until_ejected(admission, route))
            # The cooldown ends and the node serves a request well, then fails again.
            redis_client.hset("clawdbot:eject:flaky", "until", 0)
            await _succeed(admission, route)
        assert cooldowns == [1_000, 2_000, 3_000]  # doubling, up to the cap
        # A success still ends a run of failures: one failure alone does not eject.
        await _succeed(admission, route)
        verdict = await admission.admit(
            lease="x", routes=[route], key_id=None, rpm=None, tpm=None,
            estimated_tokens=0, check_rate=False,
        )  # fmt: skip
        assert verdict.status == "ok"
        assert await admission.release(lease="x", node="flaky", outcome="fail") == 0
    finally:
        resp.close()


async def test_the_queue_is_first_come_first_served(redis_client: redis.Redis) -> None:
    resp = RespClient(settings.REDIS_URL)
    admission = Admission(async_client(), resp)
    await admission.load()
    route = _route("busy", max_concurrent=1, queue_size=4)

    async def admit(lease: str, queued_at: str = "") -> str:
        verdict = await admission.admit(
            lease=lease, routes=[route], key_id=None, rpm=None, tpm=None,
            estimated_tokens=0, check_rate=False, queued_at=queued_at,
        )  # fmt: skip
        return verdict.status

    try:
        assert await admit("a") == "ok"
        assert await admit("b") == "queued"
        assert await admit("c") == "queued"
        await admission.release(lease="a", node="busy", outcome="ok")
        # The slot is free, but two requests were waiting for it: a newcomer queues behind
        # them, and of the two the later one keeps waiting while the first takes it.
        assert await admit("d") == "queued"
        assert await admit("c", queued_at="busy") == "queued"
        assert await admit("b", queued_at="busy") == "ok"
        await admission.release(lease="b", node="busy", outcome="ok")
        assert await admit("d", queued_at="busy") == "queued"
        assert await admit("c", queued_at="busy") == "ok"
        # A waiting request that leaves gives up its place.
        await admission.release(lease="d", node="busy", outcome="neutral", queued=True)
        assert redis_client.zcard("clawdbot:qorder:busy") == 0
        assert redis_client.zcard("clawdbot:queue:busy") == 0
    finally:
        resp.close()


async def test_a_lapsed_place_in_the_queue_frees_it(redis_client: redis.Redis) -> None:
    # A gateway process killed while its request waited: the place lapses with its lease.
    resp = RespClient(settings.REDIS_URL)
    admission = Admission(async_client(), resp)
    await admission.load()
    route = _route("busy", max_concurrent=1, queue_size=1)
    try:
        first = await admission.admit(
            lease="a", routes=[route], key_id=None, rpm=None, tpm=None,
            estimated_tokens=0, check_rate=False,
        )  # fmt: skip
        waiting = await admission.admit(
            lease="b", routes=[route], key_id=None, rpm=None, tpm=None,
            estimated_tokens=0, check_rate=False,
        )  # fmt: skip
        assert (first.status, waiting.status) == ("ok", "queued")
        redis_client.zadd("clawdbot:queue:busy", {"b": 1})  # its expiry long past
        await admission.release(lease="a", node="busy", outcome="ok")
        newcomer = await admission.admit(
            lease="c", routes=[route], key_id=None, rpm=None, tpm=None,
            estimated_tokens=0, check_rate=False,
        )  # fmt: skip
        assert newcomer.status == "ok"
        assert redis_client.zcard("clawdbot:qorder:busy") == 0
    finally:
        resp.close()


async def test_a_retry_queues_on_the_same_gpu_type_when_it_must_queue(
    redis_client: redis.Redis,
) -> None:
    resp = RespClient(settings.REDIS_URL)
    admission = Admission(async_client(), resp)
    await admission.load()
    fast = _route("h100", max_concurrent=1, queue_size=4, gpu="H100", weight=4.0)
    slow = _route("a10", max_concurrent=1, queue_size=4, gpu="A10", weight=1.0)
    try:
        for lease, route in (("f", fast), ("s", slow)):
            verdict = await admission.admit(
                lease=lease, routes=[route], key_id=None, rpm=None, tpm=None,
                estimated_tokens=0, check_rate=False,
            )  # fmt: skip
            assert verdict.status == "ok"
        # Both full: the faster node has the shorter expected wait, but a retry after an A10
        # failed prefers another A10 for its place in a queue too.
        verdict = await admission.admit(
            lease="r", routes=[fast, slow], key_id=None, rpm=None, tpm=None,
            estimated_tokens=0, check_rate=False, prefer_gpu="A10",
        )  # fmt: skip
        assert (verdict.status, verdict.node) == ("queued", "a10")
        verdict = await admission.admit(
            lease="n", routes=[fast, slow], key_id=None, rpm=None, tpm=None,
            estimated_tokens=0, check_rate=False,
        )  # fmt: skip
        assert (verdict.status, verdict.node) == ("queued", "h100")
    finally:
        resp.close()


async def test_a_place_in_a_queue_lapses_soon_and_is_not_renewed(
    redis_client: redis.Redis,
) -> None:
    # A process that dies with requests queued must not hold back freed slots for a whole
    # lease: its places live only as long as their polls keep them.
    resp = RespClient(settings.REDIS_URL)
    admission = Admission(async_client(), resp)
    await admission.load()
    route = _route("busy", max_concurrent=1, queue_size=4)
    try:
        for lease in ("a", "b"):
            await admission.admit(
                lease=lease, routes=[route], key_id=None, rpm=None, tpm=None,
                estimated_tokens=0, check_rate=False,
            )  # fmt: skip
        now_ms = time.time() * 1000
        place = redis_client.zscore("clawdbot:queue:busy", "b")
        slot = redis_client.zscore("clawdbot:slots:busy", "a")
        assert place is not None and place <= now_ms + QUEUE_TTL_MS + 1000
        assert slot is not None and slot >= now_ms + LEASE_TTL_MS - 1000
        await admission.renew([("queue:busy", "b"), ("slots:busy", "a")])
        assert redis_client.zscore("clawdbot:queue:busy", "b") == place
        assert redis_client.zscore("clawdbot:slots:busy", "a") >= slot  # type: ignore[operator]
    finally:
        resp.close()


async def test_forget_frees_whatever_an_unread_admission_granted(
    redis_client: redis.Redis,
) -> None:
    resp = RespClient(settings.REDIS_URL)
    admission = Admission(async_client(), resp)
    await admission.load()
    route = _route("busy", max_concurrent=1, queue_size=4)
    try:
        for lease in ("a", "b"):
            await admission.admit(
                lease=lease, routes=[route], key_id=None, rpm=None, tpm=None,
                estimated_tokens=0, check_rate=False,
            )  # fmt: skip
        await admission.forget("a", ["other", "busy"])
        await admission.forget("b", ["busy"])
        for key in ("slots", "queue", "qorder"):
            assert redis_client.zcard(f"clawdbot:{key}:busy") == 0
    finally:
        resp.close()


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
    routes = (_route("gpu1"), _route("gpu2"))
    task = asyncio.ensure_future(proxy._admit(lease="L", routes=routes, check_rate=False))
    await in_flight.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert forgotten == [("L", ["gpu1", "gpu2"])]
