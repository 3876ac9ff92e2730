"""The /v1 API end to end: the official openai client and raw HTTP against a real gateway
process in front of simulator processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
import redis
from django.conf import settings
from django.test import Client
from openai.types.chat import ChatCompletionMessageParam

from clawdbot_site import redis_keys
from gateway import tasks
from gateway.models import ApiKey, RequestLog
from gateway.services import apikey_create, apikey_revoke
from tests.gateway.world import World, build
from tests.gateways import GatewayProcess
from tests.simulators import SimProcess

pytestmark = pytest.mark.slow  # real servers and processes

SIM = ("--api", "ollama", "--model", "qwen3:32b", "--zero-latency")
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]


@pytest.fixture
def world(gateway: GatewayProcess, simulator: Callable[..., SimProcess]) -> World:
    return build(gateway, {"gpu1": simulator(*SIM)})


def client(world: World) -> openai.OpenAI:
    return openai.OpenAI(base_url=world.base_url, api_key=world.key, max_retries=0)


def test_chat_completion_with_the_openai_client(world: World) -> None:
    answer = client(world).chat.completions.create(model="qwen3-32b", messages=HELLO)
    assert answer.object == "chat.completion"
    assert answer.model == "qwen3-32b"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.total_tokens == (
        answer.usage.prompt_tokens + answer.usage.completion_tokens
    )


def test_the_node_gets_native_ollama_with_num_ctx_and_keep_alive(
    world: World, simulator: Callable[..., SimProcess]
) -> None:
    client(world).chat.completions.create(
        model="qwen3-32b", messages=HELLO, max_tokens=5000, temperature=0.2
    )
    (sent,) = [r for r in world_sim_requests(world) if r["path"] == "/api/chat"]
    body = sent["body"]
    assert body["model"] == "qwen3:32b" and body["stream"] is False
    assert body["options"]["num_ctx"] == 8192
    assert body["options"]["num_predict"] == 1024, "max_tokens is clamped to the profile"
    assert body["options"]["temperature"] == 0.2
    assert body["keep_alive"] == "5m"
    assert body["truncate"] is False and body["shift"] is False


def world_sim_requests(world: World) -> list[dict[str, Any]]:
    # The simulator serves its control API on its main port too.
    reply: list[dict[str, Any]] = httpx.get(world.nodes["gpu1"].base_url + "/_sim/requests").json()[
        "requests"
    ]
    return reply


async def test_streaming_with_the_async_client(world: World) -> None:
    aclient = openai.AsyncOpenAI(base_url=world.base_url, api_key=world.key, max_retries=0)
    stream = await aclient.chat.completions.create(
        model="qwen3-32b",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=5,
    )
    chunks = [chunk async for chunk in stream]
    await aclient.close()
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 5
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert len({c.id for c in chunks}) == 1


def test_sync_stream_raw_sse_ends_with_done(world: World) -> None:
    with world.stream_chat(max_tokens=3) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert '"usage"' not in "".join(events[:-1]), "no usage without include_usage"


def test_completions_and_embeddings(world: World) -> None:
    c = client(world)
    text = c.completions.create(model="qwen3-32b", prompt="Once upon a time", max_tokens=4)
    assert text.object == "text_completion" and text.choices[0].text
    assert text.usage is not None and text.usage.completion_tokens == 4
    vectors = c.embeddings.create(model="qwen3-32b", input=["one", "two"])
    assert [d.index for d in vectors.data] == [0, 1]
    assert len(vectors.data[0].embedding) == 384
    assert vectors.usage.prompt_tokens > 0


def test_models_lists_only_what_the_key_may_use(world: World) -> None:
    c = client(world)
    assert [m.id for m in c.models.list()] == ["qwen3-32b"]
    assert c.models.retrieve("qwen3-32b").id == "qwen3-32b"
    other = apikey_create(name="none", models=[]).secret  # every model
    limited_profile_key = ApiKey.objects.get(prefix=other.split("-")[1])
    assert limited_profile_key.allowed_profiles.count() == 0
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("nope")
    # A trailing slash is the same URL, not a model named "".
    listed = httpx.get(world.base_url + "/models/", headers=world.headers(), timeout=10)
    assert listed.status_code == 200 and [m["id"] for m in listed.json()["data"]] == ["qwen3-32b"]
    chat = httpx.post(
        world.base_url + "/chat/completions/",
        headers=world.headers(),
        json={"model": "qwen3-32b", "messages": HELLO, "max_tokens": 2},
        timeout=10,
    )
    assert chat.status_code == 200


def test_a_model_the_key_may_not_use_is_404_like_an_unknown_one(
    world: World, make_profile: Callable[..., object]
) -> None:
    make_profile("other-model", upstream_model="other")
    limited = apikey_create(name="limited", models=["other-model"]).secret
    world.gateway.wait_for_config()
    c = openai.OpenAI(base_url=world.base_url, api_key=limited, max_retries=0)
    with pytest.raises(openai.NotFoundError) as denied:
        c.chat.completions.create(model="qwen3-32b", messages=HELLO)
    with pytest.raises(openai.NotFoundError) as unknown:
        c.chat.completions.create(model="does-not-exist", messages=HELLO)
    assert denied.value.code == unknown.value.code == "model_not_found"
    assert [m.id for m in c.models.list()] == ["other-model"]


def test_authentication_errors(world: World) -> None:
    for key in ("", "ck-aaaaaaaa-wrong", "sk-openai-style"):
        response = httpx.post(
            world.base_url + "/chat/completions",
            headers={"authorization": f"Bearer {key}"} if key else {},
            json={"model": "qwen3-32b", "messages": HELLO},
        )
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
        assert set(error) == {"message", "type", "param", "code"}
        assert response.headers["x-should-retry"] == "false"


def test_revoked_key_stops_working_within_a_second(world: World) -> None:
    c = client(world)
    c.chat.completions.create(model="qwen3-32b", messages=HELLO)
    apikey_revoke(key=ApiKey.objects.get(prefix=world.key.split("-")[1]))
    world.gateway.wait_for_config(timeout_s=1.0)
    with pytest.raises(openai.AuthenticationError):
        c.chat.completions.create(model="qwen3-32b", messages=HELLO)


MSG = b'"messages": [{"role": "user", "content": "x"}]'


@pytest.mark.parametrize(
    ("body", "status", "param", "fragment"),
    [
        (b"{not json", 400, None, "not valid JSON"),
        (b"", 400, None, "empty"),
        (b"[]", 400, None, ""),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model", ""),
        (b'{"model": "qwen3-32b"}', 400, "messages", ""),
        (b'{"model": "qwen3-32b", "messages": "hi"}', 400, "messages", ""),
        (b'{"model": "qwen3-32b", ' + MSG + b', "n": 2}', 400, "n", ""),
        (b'{"model": "qwen3-32b", "messages": [{"role": "robot"}]}', 400, "messages[0].role", ""),
        (b'{"model": "qwen3-32b", ' + MSG + b', "max_tokens": "9"}', 400, "max_tokens", ""),
        (b'{"model": "qwen3-32b", ' + MSG + b', "stream": "yes"}', 400, "stream", ""),
    ],
)  # fmt: skip
def test_bad_input_is_a_400_with_param(
    world: World, body: bytes, status: int, param: str | None, fragment: str
) -> None:
    response = httpx.post(
        world.base_url + "/chat/completions",
        headers={**world.headers(), "content-type": "application/json"},
        content=body,
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment in error["message"]


def test_context_window_is_enforced_with_numbers(world: World) -> None:
    long_prompt = "word " * 40_000
    with pytest.raises(openai.BadRequestError) as info:
        client(world).chat.completions.create(
            model="qwen3-32b", messages=[{"role": "user", "content": long_prompt}]
        )
    assert info.value.code == "context_length_exceeded"
    assert "maximum context length is 8192 tokens" in info.value.message
    assert not [r for r in world_sim_requests(world) if r["path"] == "/api/chat"]


def test_prompt_plus_max_tokens_over_the_window_is_refused(world: World) -> None:
    prompt = "word " * 7000  # about 7,000+ tokens: fits alone, not with 1024 more
    with pytest.raises(openai.BadRequestError) as info:
        client(world).chat.completions.create(
            model="qwen3-32b", messages=[{"role": "user", "content": prompt}], max_tokens=1024
        )
    assert info.value.code == "context_length_exceeded"
    assert "in the completion" in info.value.message


def test_wrong_method_unknown_path_and_body_limit(world: World) -> None:
    response = httpx.get(world.base_url + "/chat/completions", headers=world.headers())
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"
    response = httpx.post(world.base_url + "/nope", headers=world.headers(), json={})
    assert response.status_code == 404 and "Unknown request URL" in response.text
    huge = (
        b'{"model": "qwen3-32b", "messages": [{"role": "user", "content": "'
        + b"x" * (11 * 1024 * 1024)
        + b'"}]}'
    )
    response = httpx.post(
        world.base_url + "/chat/completions", headers=world.headers(), content=huge
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_health_readiness_and_metrics(world: World) -> None:
    assert httpx.get(world.gateway.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(world.gateway.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["ready_nodes"] == 1
    client(world).chat.completions.create(model="qwen3-32b", messages=HELLO)
    text = httpx.get(world.gateway.url + "/metrics").text
    assert "clawdbot_router_up 1.0" in text
    assert 'clawdbot_requests_total{model="qwen3-32b",node="gpu1",status="200"} 1.0' in text
    assert 'clawdbot_request_duration_seconds_count{model="qwen3-32b"} 1.0' in text
    assert 'clawdbot_time_to_first_token_seconds_count{model="qwen3-32b"} 1.0' in text
    assert 'clawdbot_node_up{node="gpu1",state="READY"} 1.0' in text
    assert 'clawdbot_node_weight{node="gpu1"} 220.0' in text
    assert 'clawdbot_node_in_flight{node="gpu1"} 0.0' in text
    assert 'clawdbot_tokens_total{kind="completion",model="qwen3-32b"}' in text


def test_a_silently_truncated_prompt_is_flagged(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    # The node really holds 1,024 tokens while the profile claims 8,192, and (like Ollama
    # before v0.30.9) it ignores truncate:false: only prompt_eval_count gives it away.
    sim = simulator(*SIM, "--context-length", "1024", "--ignore-truncate")
    world = build(gateway, {"gpu1": sim})
    prompt = "word " * 3000
    response = httpx.post(
        world.base_url + "/chat/completions",
        headers=world.headers(),
        json={"model": "qwen3-32b", "messages": [{"role": "user", "content": prompt}]},
        timeout=20,
    )
    assert response.status_code == 200
    assert response.headers["x-clawdbot-prompt-truncated"] == "true"
    assert response.json()["usage"]["prompt_tokens"] < 1024


def test_a_node_that_refuses_an_oversized_prompt_maps_to_context_length_exceeded(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    sim = simulator(*SIM, "--context-length", "1024")
    world = build(gateway, {"gpu1": sim})
    response = httpx.post(
        world.base_url + "/chat/completions",
        headers=world.headers(),
        json={"model": "qwen3-32b", "messages": [{"role": "user", "content": "word " * 3000}]},
        timeout=20,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert "x-clawdbot-prompt-truncated" not in response.headers


def test_max_tokens_does_not_make_a_whole_prompt_look_truncated(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    # The estimate compared with the node's prompt count is the prompt's alone, not the
    # prompt plus the output budget.
    world = build(gateway, {"gpu1": simulator(*SIM)})
    response = httpx.post(
        world.base_url + "/chat/completions",
        headers=world.headers(),
        json={
            "model": "qwen3-32b",
            "messages": [{"role": "user", "content": "word " * 60}],
            "max_tokens": 1000,
        },
        timeout=20,
    )
    assert response.status_code == 200
    assert response.json()["usage"]["prompt_tokens"] >= 60
    assert "x-clawdbot-prompt-truncated" not in response.headers


def test_tokens_per_minute_count_max_tokens_as_clamped_to_the_profile(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    # max_tokens 5000 is clamped to the profile's 1024, so the request can never use more
    # than about 1,034 tokens: a 2,000-token budget must admit it.
    world = build(gateway, {"gpu1": simulator(*SIM)}, key_fields={"tpm_limit": 2000})
    response = httpx.post(
        world.base_url + "/chat/completions",
        headers=world.headers(),
        json={"model": "qwen3-32b", "messages": [{"role": "user", "content": "hi"}],
              "max_tokens": 5000},
        timeout=20,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert int(response.headers["x-ratelimit-remaining-tokens"]) < 1000


def test_a_truncated_streamed_prompt_is_recorded_in_the_request_log(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess], admin_client: Client
) -> None:
    # On a stream the node's prompt count arrives after the headers went out, so the flag
    # goes to the request log, where the admin can filter for it.
    sim = simulator(*SIM, "--context-length", "1024", "--ignore-truncate")
    world = build(gateway, {"gpu1": sim})
    with world.stream_chat(
        messages=[{"role": "user", "content": "word " * 3000}],
        stream_options={"include_usage": True},
    ) as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        assert list(response.iter_lines())[-2] == "data: [DONE]"
    buffered = redis.Redis.from_url(settings.REDIS_URL)
    deadline = time.monotonic() + 10
    while buffered.llen(redis_keys.REQUEST_LOG) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)  # bounded poll: the entry is pushed just after the last byte
    assert tasks.flush_request_logs() == 1
    row = RequestLog.objects.get(request_id=request_id)
    assert row.prompt_truncated and row.stream and row.prompt_tokens is not None
    page = admin_client.get("/admin/gateway/requestlog/?prompt_truncated__exact=1")
    assert page.status_code == 200 and request_id in page.content.decode()
    assert admin_client.get("/admin/gateway/requestlog/add/").status_code == 403
