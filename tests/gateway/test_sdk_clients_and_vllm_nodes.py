"""Client-facing behaviour the other data-plane tests leave out: the async and sync openai
clients, OpenAI-compatible (vLLM) nodes, expired keys, retries after a slow or busy node,
readiness, metrics across gateway processes, and a client leaving mid-stream. Real gateway,
simulator and Redis processes throughout."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import openai
import pytest
import redis
from django.conf import settings
from django.utils import timezone
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from clawdbot_site import redis_keys
from gateway import tasks
from gateway.admission import LEASE_TTL_MS
from gateway.models import RequestLog
from gateway.services import apikey_create
from nodes.models import Deployment, ModelProfile, Node
from tests.gateway.world import World, add_node, build
from tests.gateways import GatewayProcess
from tests.simulators import SimProcess

pytestmark = pytest.mark.slow  # real servers and processes

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]
FAST = ("--api", "ollama", "--model", "qwen3:32b", "--zero-latency")
# A node that really takes its time: one token per `decode_ms` on an A10 (GPU factor 1),
# model already loaded so no cold-load delay comes first.
SLOW = ("--api", "ollama", "--model", "qwen3:32b", "--gpu-type", "A10", "--preloaded")
VLLM_MODEL = "Qwen/Qwen3-32B"
UPSTREAM_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def impatient_gateway(django_db_setup: None) -> Iterator[GatewayProcess]:
    """A second gateway process that gives up on a silent node after one second.

    Both timeouts are set: the wait for a node's answer to begin was bounded by
    CLAWDBOT_READ_TIMEOUT_S alone until CLAWDBOT_FIRST_BYTE_TIMEOUT_S took it over, and with
    either one left at its default the retry test would wait minutes, not fail."""
    process = GatewayProcess(
        env={
            "CLAWDBOT_READ_TIMEOUT_S": str(UPSTREAM_TIMEOUT_S),
            "CLAWDBOT_FIRST_BYTE_TIMEOUT_S": str(UPSTREAM_TIMEOUT_S),
        }
    )
    yield process
    process.stop()


def openai_client(world: World) -> openai.OpenAI:
    return openai.OpenAI(base_url=world.base_url, api_key=world.key, max_retries=0)


def chat(url: str, key: str, **extra: object) -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "qwen3-32b", "messages": HELLO, **extra},
        timeout=20,
    )


def poll(condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "") -> float:
    """Wait for an observable condition; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(0.02)  # bounded poll of an observable condition
    raise AssertionError(f"not reached within {timeout_s} s: {what or condition}")


def logged(request_id: str) -> RequestLog:
    """The request-log row of one request. Its entry is pushed by the closing pipeline, which
    runs after the answer went out, so poll the buffer until it arrives."""

    def flushed() -> bool:
        tasks.flush_request_logs()
        return RequestLog.objects.filter(request_id=request_id).exists()

    poll(flushed, what=f"request log row {request_id}")
    return RequestLog.objects.get(request_id=request_id)


def live_slots(node: str) -> int:
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return int(client.zcount(redis_keys.slots(node), int(time.time() * 1000), "+inf"))
    finally:
        client.close()


def metric_samples(gateway: GatewayProcess) -> dict[str, float]:
    """The cluster-wide counters and histogram counts one process's /metrics shows."""
    text = httpx.get(gateway.url + "/metrics", timeout=5).text
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(
            (
                "clawdbot_requests_total",
                "clawdbot_tokens_total",
                "clawdbot_request_duration_seconds_count",
                "clawdbot_time_to_first_token_seconds_count",
            )
        ):
            series, value = line.rsplit(" ", 1)
            samples[series] = float(value)
    return samples


# --- the official openai client, both flavours ---


@pytest.fixture
def world(gateway: GatewayProcess, simulator: Callable[..., SimProcess]) -> World:
    return build(gateway, {"gpu1": simulator(*FAST)})


async def test_async_client_non_streaming_completion_with_raw_response(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    world = await asyncio.to_thread(build, gateway, {"gpu1": simulator(*FAST)})
    async with openai.AsyncOpenAI(
        base_url=world.base_url, api_key=world.key, max_retries=0
    ) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="qwen3-32b", messages=HELLO, max_tokens=7
        )
        answer = raw.parse()
    assert raw.status_code == 200
    request_id = raw.headers["x-request-id"]
    assert request_id.startswith("req-")
    assert answer._request_id == request_id, "the client exposes the gateway's request id"
    assert raw.headers["x-clawdbot-node"] == "gpu1"
    assert answer.object == "chat.completion"
    assert answer.model == "qwen3-32b"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 7
    assert answer.usage.prompt_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 7
    row = await asyncio.to_thread(logged, request_id)
    assert (row.status, row.node, row.stream) == (200, "gpu1", False)
    assert (row.prompt_tokens, row.completion_tokens) == (answer.usage.prompt_tokens, 7)


def test_sync_client_streams_a_whole_answer_with_usage(world: World) -> None:
    raw = openai_client(world).chat.completions.with_raw_response.create(
        model="qwen3-32b",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks: list[ChatCompletionChunk] = []
    with raw.parse() as stream:  # raises openai.APIError on an error event
        chunks.extend(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.content for c in chunks if c.choices]
    text = "".join(d or "" for d in deltas)
    assert len([d for d in deltas if d]) >= 2, "content arrives as several deltas"
    assert text.strip()
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert all(f is None for f in finishes[:-1])
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    assert usage_chunk.usage.completion_tokens > 0
    assert usage_chunk.usage.total_tokens == (
        usage_chunk.usage.prompt_tokens + usage_chunk.usage.completion_tokens
    )
    assert {c.model for c in chunks} == {"qwen3-32b"}
    assert len({c.id for c in chunks}) == 1
    # The gateway saw the stream through to its end: a 200 with the same token counts.
    row = logged(raw.headers["x-request-id"])
    assert (row.status, row.stream, row.error_code) == (200, True, "")
    assert row.completion_tokens == usage_chunk.usage.completion_tokens


# --- an OpenAI-compatible (vLLM) node ---


def build_vllm(gateway: GatewayProcess, sim: SimProcess) -> World:
    profile = ModelProfile.objects.create(
        model_id="qwen3-32b",
        upstream_model=VLLM_MODEL,
        context_window=8192,
        max_output_tokens=1024,
    )
    node = add_node(profile, "vllm1", sim, api="openai", gpu_type="H200")
    key = apikey_create(name="vllm").secret
    gateway.wait_for_config()
    return World(gateway=gateway, key=key, profile=profile, nodes={"vllm1": node})


@pytest.fixture
def vllm_world(gateway: GatewayProcess, simulator: Callable[..., SimProcess]) -> World:
    # The node holds 2,048 tokens while the profile claims 8,192: only the node can refuse.
    sim = simulator(
        "--api", "openai", "--model", VLLM_MODEL, "--zero-latency", "--context-length", "2048"
    )
    return build_vllm(gateway, sim)


def vllm_requests(world: World) -> list[dict[str, Any]]:
    reply = httpx.get(world.nodes["vllm1"].base_url + "/_sim/requests", timeout=5).json()
    return [r for r in reply["requests"] if r["path"] == "/v1/chat/completions"]


def test_vllm_node_non_streaming_answer_names_the_profile_model(vllm_world: World) -> None:
    raw = openai_client(vllm_world).chat.completions.with_raw_response.create(
        model="qwen3-32b", messages=HELLO, max_tokens=6
    )
    answer = raw.parse()
    assert raw.headers["x-clawdbot-node"] == "vllm1"
    assert answer.model == "qwen3-32b", "the upstream's model name never reaches the client"
    assert answer.choices[0].message.content and answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 6
    (sent,) = vllm_requests(vllm_world)
    assert sent["body"]["model"] == VLLM_MODEL
    assert sent["body"]["stream"] is False and sent["body"]["max_tokens"] == 6


def test_vllm_node_streaming_through_the_gateway(vllm_world: World) -> None:
    client = openai_client(vllm_world)
    with client.chat.completions.create(
        model="qwen3-32b",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=5,
    ) as stream:
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.model for c in chunks} == {"qwen3-32b"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    # Without include_usage the client gets no usage chunk, whatever the gateway asked for.
    with client.chat.completions.create(
        model="qwen3-32b", messages=HELLO, stream=True, max_tokens=5
    ) as stream:
        plain = list(stream)
    assert plain and all(c.choices and c.usage is None for c in plain)
    sent = vllm_requests(vllm_world)
    assert [r["body"]["model"] for r in sent] == [VLLM_MODEL, VLLM_MODEL]
    assert all(r["body"]["stream"] is True for r in sent)


def test_vllm_node_refusing_an_oversized_prompt_is_an_openai_400(vllm_world: World) -> None:
    prompt: list[ChatCompletionMessageParam] = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(openai.BadRequestError) as info:
        openai_client(vllm_world).chat.completions.create(
            model="qwen3-32b", messages=prompt, max_tokens=100
        )
    assert info.value.status_code == 400
    assert info.value.code == "context_length_exceeded"
    assert info.value.type == "invalid_request_error"
    assert info.value.param == "messages"
    assert "maximum context length is 2048 tokens" in info.value.message
    assert len(vllm_requests(vllm_world)) == 1, "the node, not the gateway, refused it"
    # Streaming: the refusal comes before any byte, so it is a plain JSON error too.
    response = httpx.post(
        vllm_world.base_url + "/chat/completions",
        headers=vllm_world.headers(),
        json={"model": "qwen3-32b", "messages": prompt, "max_tokens": 100, "stream": True},
        timeout=20,
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("invalid_request_error", "context_length_exceeded")
    assert "x-clawdbot-attempts" not in response.headers, "a 4xx is not retried"


# --- keys ---


def test_expired_keys_get_401_invalid_api_key(world: World) -> None:
    expired = apikey_create(name="old", expires_at=timezone.now() - timedelta(minutes=1)).secret
    # Expires while the gateway's snapshot still holds it: the request-time check must catch it.
    expiring = apikey_create(name="brief", expires_at=timezone.now() + timedelta(seconds=3))
    world.gateway.wait_for_config()
    assert chat(world.gateway.url, expiring.secret).status_code == 200

    def refused() -> bool:
        return chat(world.gateway.url, expiring.secret).status_code == 401

    poll(refused, timeout_s=10, what="the expiring key to be refused")
    assert expiring.key.expires_at is not None and timezone.now() >= expiring.key.expires_at
    for secret in (expired, expiring.secret):
        response = chat(world.gateway.url, secret)
        assert response.status_code == 401
        error = response.json()["error"]
        assert (error["code"], error["type"]) == ("invalid_api_key", "invalid_request_error")
        assert "expired" in error["message"]
        assert secret not in response.text, "the secret is never echoed"
        assert response.headers["x-should-retry"] == "false"
        client = openai.OpenAI(base_url=world.base_url, api_key=secret, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            client.chat.completions.create(model="qwen3-32b", messages=HELLO)
        assert info.value.code == "invalid_api_key"


# --- retries ---


def test_a_node_that_times_out_is_retried_on_another(
    gateway: GatewayProcess,
    impatient_gateway: GatewayProcess,
    simulator: Callable[..., SimProcess],
) -> None:
    # The slow node has the higher weight, so it is tried first; its first byte would come
    # after 20 tokens x 3 s, far past the impatient gateway's one-second timeout.
    slow = simulator(*SLOW, "--decode-ms", "3000")
    world = build(
        impatient_gateway,
        {"slow": slow, "good": simulator(*FAST)},
        node_fields={"slow": {"gpu_type": "H200"}, "good": {"gpu_type": "A10"}},
    )
    started = time.monotonic()
    response = chat(impatient_gateway.url, world.key, max_tokens=20)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.headers["x-clawdbot-node"] == "good"
    assert response.headers["x-clawdbot-attempts"] == "2"
    assert response.json()["choices"][0]["message"]["content"]
    assert UPSTREAM_TIMEOUT_S * 0.9 <= elapsed < 10, "the gateway waited for the timeout, no more"
    assert slow.stats()["requests_by_path"].get("/api/chat") == 1
    row = logged(response.headers["x-request-id"])
    assert (row.status, row.node, row.attempts) == (200, "good", 2)


def stream_past_a_slow_node(
    impatient_gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> tuple[httpx.Headers, list[str]]:
    """A streamed request whose first node says nothing for longer than the timeout, while
    the gateway already sent keep-alive comments (every 0.3 s) and so its response headers."""
    world = build(
        impatient_gateway,
        {"slow": simulator(*SLOW, "--decode-ms", "3000"), "good": simulator(*FAST)},
        node_fields={"slow": {"gpu_type": "H200"}, "good": {"gpu_type": "A10"}},
    )
    with world.stream_chat() as response:
        assert response.status_code == 200
        return response.headers, [line for line in response.iter_lines() if line]


def test_a_streamed_request_is_retried_after_a_timeout_even_after_keep_alives(
    gateway: GatewayProcess,
    impatient_gateway: GatewayProcess,
    simulator: Callable[..., SimProcess],
) -> None:
    headers, lines = stream_past_a_slow_node(impatient_gateway, simulator)
    assert lines[0] == ": keep-alive", "the response had started before the retry"
    events = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert not any("error" in chunk for chunk in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.strip()
    row = logged(headers["x-request-id"])
    assert (row.status, row.node, row.attempts) == (200, "good", 2)


def test_a_streamed_retry_does_not_name_the_failed_node(
    gateway: GatewayProcess,
    impatient_gateway: GatewayProcess,
    simulator: Callable[..., SimProcess],
) -> None:
    # The headers went out with the first keep-alive, before any node had answered: they
    # must not name the node that was being tried (and then failed).
    headers, _ = stream_past_a_slow_node(impatient_gateway, simulator)
    assert "x-clawdbot-node" not in headers
    assert headers["x-request-id"].startswith("req-")


def test_a_busy_node_answering_503_is_retried_on_another(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    busy = simulator(*SLOW, "--decode-ms", "1000", "--parallel", "1", "--max-queue", "0")
    world = build(
        gateway,
        {"busy": busy, "good": simulator(*FAST)},
        node_fields={"busy": {"gpu_type": "H200"}, "good": {"gpu_type": "A10"}},
    )
    # Someone else's long generation holds the busy node's only slot (and it queues nobody).
    with httpx.stream(
        "POST",
        busy.url + "/api/chat",
        json={"model": "qwen3:32b", "messages": HELLO, "options": {"num_predict": 60}},
        timeout=20,
    ) as occupant:
        assert occupant.status_code == 200
        assert busy.stats()["running"] == 1
        response = chat(gateway.url, world.key)
    assert response.status_code == 200, response.text
    assert response.headers["x-clawdbot-node"] == "good"
    assert response.headers["x-clawdbot-attempts"] == "2"
    assert busy.stats()["responses_by_status"].get("503") == 1, "the busy node said 503"


# --- readiness and metrics ---


def test_readyz_is_503_with_problems_until_a_node_is_ready(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    sim = simulator(*FAST)
    profile = ModelProfile.objects.create(
        model_id="qwen3-32b",
        upstream_model="qwen3:32b",
        context_window=8192,
        max_output_tokens=1024,
    )
    node = Node.objects.create(
        name="gpu1", base_url=sim.url, api_kind="ollama", gpu_type="A100", state="DOWN"
    )
    Deployment.objects.create(node=node, profile=profile)

    def readyz() -> httpx.Response:
        gateway.wait_for_config()
        return httpx.get(gateway.url + "/readyz", timeout=5)

    down = readyz()
    assert down.status_code == 503
    body = down.json()
    assert body["status"] == "not ready" and body["ready_nodes"] == 0
    assert body["problems"] == ["no READY node"]
    # READY but draining takes no traffic: still not ready.
    node.state, node.draining = "READY", True
    node.save()
    draining = readyz()
    assert draining.status_code == 503 and draining.json()["problems"] == ["no READY node"]
    node.draining = False
    node.save()
    ready = readyz()
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "problems": [],
        "snapshot_version": ready.json()["snapshot_version"],
        "ready_nodes": 1,
        # The degradation tier this process acts on (tiers are off in this test gateway).
        "tier": 0,
        "error_rate": 0.0,
        "window_requests": 0,
    }


def test_metrics_are_the_same_from_either_gateway_process(
    gateway: GatewayProcess,
    impatient_gateway: GatewayProcess,
    simulator: Callable[..., SimProcess],
) -> None:
    world = build(gateway, {"gpu1": simulator(*FAST)})
    impatient_gateway.wait_for_config()
    assert chat(gateway.url, world.key, max_tokens=3).status_code == 200
    streamed = chat(impatient_gateway.url, world.key, max_tokens=4, stream=True)
    assert streamed.status_code == 200
    assert chat(impatient_gateway.url, world.key, model="nope").status_code == 404
    ok = 'clawdbot_requests_total{model="qwen3-32b",node="gpu1",status="200"}'
    # Each request adds to the counters after its answer went out: wait for both.
    poll(lambda: metric_samples(gateway).get(ok) == 2.0, what="two requests counted")
    poll(
        lambda: any('status="404"' in s for s in metric_samples(gateway)),
        what="the 404 counted",
    )
    a, b = metric_samples(gateway), metric_samples(impatient_gateway)
    assert a == b, "every process renders the cluster's numbers"
    assert a[ok] == 2.0
    assert a['clawdbot_request_duration_seconds_count{model="qwen3-32b"}'] == 2.0
    assert a['clawdbot_time_to_first_token_seconds_count{model="qwen3-32b"}'] == 2.0
    assert a['clawdbot_tokens_total{kind="completion",model="qwen3-32b"}'] == 7.0
    assert [v for s, v in a.items() if 'status="404"' in s] == [1.0]


# --- a client leaving mid-stream ---


def test_a_client_leaving_mid_stream_frees_its_slot_at_once_and_is_logged_499(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    # 100 tokens at 200 ms: the answer would take 20 s, the lease 30 s to lapse.
    sim = simulator(*SLOW, "--decode-ms", "200", "--answer-tokens", "200")
    world = build(
        gateway, {"gpu1": sim}, node_fields={"gpu1": {"max_concurrent": 1, "queue_size": 0}}
    )
    with httpx.Client(timeout=20) as client:
        with client.stream(
            "POST",
            world.base_url + "/chat/completions",
            headers=world.headers(),
            json={"model": "qwen3-32b", "messages": HELLO, "stream": True, "max_tokens": 100},
        ) as response:
            assert response.status_code == 200
            request_id = response.headers["x-request-id"]
            content = 0
            for line in response.iter_lines():
                if not line.startswith("data: {"):
                    continue
                choices = json.loads(line.removeprefix("data: "))["choices"]
                if choices and choices[0]["delta"].get("content"):
                    content += 1
                    if content == 1:
                        assert live_slots("gpu1") == 1, "the stream holds the node's one slot"
                    else:
                        # Content is flowing: leave in the middle of the answer. Breaking out
                        # drops httpx's unfinished stream, which closes the connection.
                        break
            assert content == 2
    freed_after = poll(lambda: live_slots("gpu1") == 0, timeout_s=10, what="the slot freed")
    assert freed_after < 2.0 < LEASE_TTL_MS / 1000, "freed by the disconnect, not by expiry"
    poll(lambda: sim.stats()["in_flight"] == 0, what="the upstream call cancelled")
    # With one slot and no queue, only a freed slot lets the next request in.
    nxt = chat(gateway.url, world.key, max_tokens=1)
    assert nxt.status_code == 200, nxt.text
    assert nxt.headers["x-clawdbot-node"] == "gpu1"
    row = logged(request_id)
    assert (row.status, row.stream, row.node) == (499, True, "gpu1")
    assert row.ttft_ms is not None and row.ttft_ms > 0, "content had reached the client"


def test_a_client_error_in_a_stream_s_first_event_is_the_client_s(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    """vLLM checks logit_bias only once the stream has begun: HTTP 200, then a first event
    with code 400. That is the client's 400, as without streaming: not retried on the other
    node, no step towards ejecting either (three in a row would eject both)."""
    args = ("--api", "openai", "--model", VLLM_MODEL, "--zero-latency")
    world = build_vllm(gateway, simulator(*args))
    add_node(world.profile, "vllm2", simulator(*args), api="openai", gpu_type="H200")
    gateway.wait_for_config()
    client = openai_client(world)
    for _ in range(4):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model="qwen3-32b", messages=HELLO, stream=True, logit_bias={"999999": 5}
            )
        assert info.value.status_code == 400 and "out-of-vocab" in info.value.message
    urls = [Node.objects.get(name=name).base_url for name in ("vllm1", "vllm2")]
    calls = [
        r
        for url in urls
        for r in httpx.get(url + "/_sim/requests", timeout=5).json()["requests"]
        if r["path"] == "/v1/chat/completions"
    ]
    assert len(calls) == 4, "each bad request went to one node only"
    answer = client.chat.completions.create(model="qwen3-32b", messages=HELLO, max_tokens=3)
    assert answer.choices[0].message.content, "no node was ejected"


def test_old_connections_that_stopped_answering_cost_one_timeout_not_one_each(
    gateway: GatewayProcess,
    impatient_gateway: GatewayProcess,
    simulator: Callable[..., SimProcess],
) -> None:
    """The node refused new connections for a while and then came back, but the gateway's
    pooled connections from before never answer again (a NAT that dropped them, a backend
    half hung). One request pays the timeout; it takes the node's other idle connections
    with it, so the next requests open new ones."""
    sim = simulator(*FAST)
    world = build(impatient_gateway, {"gpu1": sim})
    with ThreadPoolExecutor(4) as pool:  # several pooled connections
        warm = list(pool.map(lambda _: chat(impatient_gateway.url, world.key), range(8)))
    assert {r.status_code for r in warm} == {200}
    sim.control(refuse_connections=True)
    sim.control(refuse_connections=False)
    statuses, started = [], time.monotonic()
    for _ in range(4):
        statuses.append(chat(impatient_gateway.url, world.key, max_tokens=3).status_code)
    elapsed = time.monotonic() - started
    assert statuses.count(200) >= 3, statuses
    assert elapsed < 3 * UPSTREAM_TIMEOUT_S, f"{elapsed:.1f} s: more than one request waited"
