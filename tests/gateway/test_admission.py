"""The admission scripts against the real Redis: ejection and its growing cooldown."""

from __future__ import annotations

import redis
from django.conf import settings

from clawdbot_site.redis_client import async_client
from gateway.admission import Admission, EjectionPolicy
from gateway.resp import RespClient
from gateway.snapshot import NodeView, Route


def _route(name: str) -> Route:
    node = NodeView(
        id=1,
        name=name,
        base_url="http://127.0.0.1:9",
        api_kind="ollama",
        gpu_type="A100",
        gpu_count=1,
        total_vram_gb=80.0,
        max_concurrent=4,
        queue_size=0,
        state="READY",
        enabled=True,
        draining=False,
        weight=1.0,
    )
    return Route(node=node, weight=1.0)


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
