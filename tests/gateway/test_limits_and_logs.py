"""Per-key limits shared by gateway processes, and the request log after a burst."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import orjson
import pytest
import redis
from django.conf import settings
from django.db import OperationalError
from openai.types.chat import ChatCompletionMessageParam

from clawdbot_site import redis_keys
from gateway import tasks
from gateway.models import RequestLog
from gateway.request_log import BUFFER
from tests.gateway.world import World, build
from tests.gateways import GatewayProcess
from tests.simulators import SimProcess

pytestmark = pytest.mark.slow  # real servers and processes

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]
FAST = ("--api", "ollama", "--model", "qwen3:32b", "--zero-latency")


@pytest.fixture
def second_gateway(gateway: GatewayProcess) -> Iterator[GatewayProcess]:
    other = GatewayProcess()
    yield other
    other.stop()


def post(url: str, key: str, **extra: object) -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "qwen3-32b", "messages": HELLO, **extra},
        timeout=20,
    )


def test_requests_per_minute_hold_across_two_gateway_processes(
    gateway: GatewayProcess,
    second_gateway: GatewayProcess,
    simulator: Callable[..., SimProcess],
) -> None:
    world = build(gateway, {"gpu1": simulator(*FAST)}, key_fields={"rpm_limit": 3})
    second_gateway.wait_for_config()
    first = post(gateway.url, world.key)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "3"
    assert first.headers["x-ratelimit-remaining-requests"] == "2"
    assert post(second_gateway.url, world.key).status_code == 200
    assert post(gateway.url, world.key).status_code == 200
    refused = post(second_gateway.url, world.key)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    # Sliding window over two fixed minutes: the wait can reach into the next minute.
    assert 1 <= int(refused.headers["retry-after"]) <= 120
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=world.key, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="qwen3-32b", messages=HELLO)


def test_tokens_per_minute(gateway: GatewayProcess, simulator: Callable[..., SimProcess]) -> None:
    world = build(gateway, {"gpu1": simulator(*FAST)}, key_fields={"tpm_limit": 60})
    ok = post(gateway.url, world.key, max_tokens=20)
    assert ok.status_code == 200
    assert ok.headers["x-ratelimit-limit-tokens"] == "60"
    # The first answer used ~30 tokens; the next asks for up to 40 more: over the minute's 60.
    refused = post(gateway.url, world.key, max_tokens=40)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "tokens"
    too_big = post(gateway.url, world.key, max_tokens=500)
    assert too_big.status_code == 429
    assert too_big.headers["x-should-retry"] == "false"
    assert "Request too large" in too_big.json()["error"]["message"]


def test_request_log_is_complete_after_a_burst(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    world: World = build(
        gateway, {"gpu1": simulator(*FAST)}, node_fields={"gpu1": {"queue_size": 64}}
    )

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        world.base_url + "/chat/completions",
                        headers=world.headers(),
                        json={"model": "qwen3-32b", "messages": HELLO, "stream": i % 2 == 0},
                    )
                    for i in range(40)
                )
            )
        return [r.status_code for r in responses]

    statuses = asyncio.run(burst())
    bad = post(gateway.url, "ck-aaaaaaaa-wrong")
    assert bad.status_code == 401
    inserted = tasks.flush_request_logs()
    assert inserted == 41
    rows = list(RequestLog.objects.all())
    assert sorted(r.status for r in rows) == sorted([*statuses, 401])
    served = [r for r in rows if r.status == 200]
    assert len(served) == 40
    assert all(r.node == "gpu1" and r.model == "qwen3-32b" for r in served)
    assert all(r.prompt_tokens and r.completion_tokens and r.latency_ms > 0 for r in served)
    assert all(r.ttft_ms is not None for r in served)
    assert sum(r.stream for r in served) == 20
    assert any(r.error_code == "invalid_api_key" for r in rows)
    assert tasks.flush_request_logs() == 0


def test_request_logs_wait_in_redis_while_the_database_is_down(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    world = build(gateway, {"gpu1": simulator(*FAST)})
    for _ in range(5):
        assert post(gateway.url, world.key).status_code == 200

    def database_down(*args: object, **kwargs: object) -> None:
        raise OperationalError("connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(RequestLog.objects, "bulk_create", database_down)
        with pytest.raises(OperationalError):
            tasks.flush_request_logs()
    assert RequestLog.objects.count() == 0
    from clawdbot_site.redis_client import sync_client

    assert sync_client().llen(BUFFER) == 5
    assert tasks.flush_request_logs() == 5
    assert RequestLog.objects.count() == 5


def test_a_stream_cut_short_by_its_client_counts_what_was_streamed(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    # Leaving before the node's final count must not make a long answer cost only its prompt.
    paced = ("--model", "qwen3:32b", "--preloaded", "--prefill-ms", "0", "--decode-ms", "10")
    world = build(
        gateway,
        {"gpu1": simulator(*paced, "--answer-tokens", "500")},
        key_fields={"tpm_limit": 100_000},
    )
    with world.stream_chat() as response:
        request_id = response.headers["x-request-id"]
        content = 0
        for line in response.iter_lines():
            content += '"content":"' in line and '"content":""' not in line
            if content == 30:
                break  # leaving closes the connection
    buffered = redis.Redis.from_url(settings.REDIS_URL)
    entry: dict[str, object] = {}
    for _ in range(500):  # bounded poll: the entry is written as the cancelled request ends
        entries = [orjson.loads(raw) for raw in buffered.lrange(BUFFER, 0, -1)]
        entry = next((e for e in entries if e["request_id"] == request_id), {})
        if entry:
            break
        time.sleep(0.02)
    assert entry["status"] == 499
    assert isinstance(entry["completion_tokens"], int) and entry["completion_tokens"] >= 30
    charged = sum(int(buffered.get(k) or 0) for k in buffered.keys(redis_keys.rate_windows("t")))
    assert charged >= 30 + 3  # what was streamed, plus the prompt
