"""Routing by expected completion time and conversation affinity through a real gateway in
front of simulator processes, with the official openai client: the second turn of a chat
goes back to the node that served the first, every answer says why its node was chosen,
the request log keeps it, and the speeds learned from the answers are in Redis and /metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
import redis
from django.conf import settings

from clawdbot_site import redis_keys
from gateway import tasks
from gateway.models import RequestLog
from tests.gateway.world import World, build
from tests.gateways import GatewayProcess
from tests.simulators import SimProcess

pytestmark = pytest.mark.slow  # real servers and processes

SIM = ("--api", "openai", "--model", "qwen3:32b", "--decode-ms", "2", "--prefill-ms", "0.01")
SYSTEM = {"role": "system", "content": "You review code carefully. " * 20}
DOCUMENT = "def handler(event):\n    return process(event['body'])\n" * 120


@pytest.fixture
def world(gateway: GatewayProcess, simulator: Callable[..., SimProcess]) -> World:
    return build(
        gateway,
        {"a": simulator(*SIM, "--gpu-type", "A100"), "b": simulator(*SIM, "--gpu-type", "A100")},
        api="openai",
        profile_fields={"context_window": 32768},
    )


def chat(world: World, messages: list, **headers: str) -> tuple[str, Any]:
    client = openai.OpenAI(base_url=world.base_url, api_key=world.key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="qwen3-32b", messages=messages, max_tokens=30, extra_headers=headers
    )
    answer = raw.parse().choices[0].message.content or ""
    return answer, raw.headers


def test_a_conversation_stays_on_the_node_that_holds_it(world: World) -> None:
    turn1 = [SYSTEM, {"role": "user", "content": "Why does this fail?\n" + DOCUMENT}]
    answer, headers = chat(world, turn1)
    node = headers["x-clawdbot-node"]
    assert headers["x-clawdbot-affinity"] == "miss"
    assert headers["x-clawdbot-route"].startswith(f"{node} expected ")
    history = turn1
    for question in ("And the fix?", "Write a test for it.", "Thanks. Anything else?"):
        history = [*history, {"role": "assistant", "content": answer}]
        history.append({"role": "user", "content": question})
        answer, headers = chat(world, history)
        assert (headers["x-clawdbot-node"], headers["x-clawdbot-affinity"]) == (node, "hit")

    # A new conversation with the same system prompt is a new conversation.
    _, fresh = chat(world, [SYSTEM, {"role": "user", "content": "Another question"}])
    assert fresh["x-clawdbot-affinity"] == "miss"

    tasks.flush_request_logs()
    rows = list(RequestLog.objects.order_by("created_at").values_list("affinity", "node", "route"))
    assert [r[0] for r in rows] == ["miss", "hit", "hit", "hit", "miss"]
    assert all(route.startswith(f"{n} expected ") for _, n, route in rows)
    metrics = httpx.get(world.gateway.url + "/metrics", timeout=10).text
    assert 'clawdbot_affinity_total{result="hit"} 3.0' in metrics
    assert 'clawdbot_affinity_total{result="miss"} 2.0' in metrics
    # What routing learned: one first turn continued (the other may yet), so about half do;
    # the node took prompts in.
    first = metrics.split('clawdbot_conversation_continue_ratio{turn="first"} ')[1]
    assert float(first.split()[0]) == pytest.approx(0.5, abs=0.01)
    assert f'clawdbot_node_prefix_cache_intake_tokens_per_second{{node="{node}"}}' in metrics


def test_a_session_header_pins_a_conversation(world: World) -> None:
    _, first = chat(world, [{"role": "user", "content": "one"}], **{"X-Clawdbot-Session": "s1"})
    for text in ("two", "three"):
        _, headers = chat(
            world, [{"role": "user", "content": text}], **{"X-Clawdbot-Session": "s1"}
        )
        assert headers["x-clawdbot-node"] == first["x-clawdbot-node"]
        assert headers["x-clawdbot-affinity"] == "hit"


def test_a_prompt_too_short_to_cache_is_not_followed(world: World) -> None:
    _, headers = chat(world, [{"role": "user", "content": "hello"}])
    assert "x-clawdbot-affinity" not in headers
    assert headers["x-clawdbot-route"].startswith(headers["x-clawdbot-node"] + " expected ")
    # Its longer follow-up is: the short first turn left nothing to find.
    _, headers = chat(world, [{"role": "user", "content": "hello"},
                              {"role": "assistant", "content": "hi"},
                              {"role": "user", "content": "and now " * 200}])  # fmt: skip
    assert headers["x-clawdbot-affinity"] == "miss"


def test_answers_teach_each_nodes_speed(world: World) -> None:
    for i in range(6):
        chat(world, [{"role": "user", "content": f"question {i} " * 50}])
    client = redis.Redis.from_url(settings.REDIS_URL)
    learned = {
        key.decode(): client.hgetall(key) for key in client.scan_iter(redis_keys.SPEEDS_PATTERN)
    }
    assert learned, "no speed learned"
    for key, fields in learned.items():
        assert key.endswith("|qwen3-32b")
        # The simulator decodes an A100's token in 2 ms / 2.2: about 1,100 tokens/s.
        assert 200 < float(fields[b"d"]) < 5000
    metrics = httpx.get(world.gateway.url + "/metrics", timeout=10).text
    assert 'clawdbot_node_decode_tokens_per_second{model="qwen3-32b",node="' in metrics


@pytest.fixture
def no_affinity(simulator: Callable[..., SimProcess]) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess({"CLAWDBOT_AFFINITY": "0"})
    yield gateway
    gateway.stop()


def test_the_usual_answer_length_is_learned_only_from_answers_without_max_tokens(
    world: World,
) -> None:
    client = openai.OpenAI(base_url=world.base_url, api_key=world.key, max_retries=0)
    lengths = redis.Redis.from_url(settings.REDIS_URL)
    key = redis_keys.PREFIX + redis_keys.OUTPUT_LEN_PART
    question: list[Any] = [{"role": "user", "content": "How long? " * 60}]
    for _ in range(5):  # a client's limit cuts answers short: they say nothing of it
        client.chat.completions.create(model="qwen3-32b", messages=question, max_tokens=3)
    assert lengths.hget(key, "qwen3-32b") is None
    for _ in range(50):  # a process learns from one answer per node every 10 ms
        client.chat.completions.create(model="qwen3-32b", messages=question)
        if lengths.hget(key, "qwen3-32b") is not None:
            break
    assert float(lengths.hget(key, "qwen3-32b") or 0) > 3


def test_affinity_can_be_turned_off(
    no_affinity: GatewayProcess, gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    world = build(no_affinity, {"a": simulator(*SIM)}, api="openai")
    _, headers = chat(world, [{"role": "user", "content": "hello " * 300}])
    assert "x-clawdbot-affinity" not in headers
    assert headers["x-clawdbot-route"].startswith("a expected ")


def test_how_much_a_nodes_cache_holds_is_learned_from_a_prefix_it_lost(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    small = simulator(*SIM, "--prefix-cache-tokens", "4000")
    world = build(gateway, {"small": small}, api="openai", profile_fields={"context_window": 32768})
    turn1 = [SYSTEM, {"role": "user", "content": "Why does this fail?\n" + DOCUMENT}]
    answer, _ = chat(world, turn1)
    cache = redis.Redis.from_url(settings.REDIS_URL)
    assert cache.hget(redis_keys.prefix_cache("small"), "cap") is None
    for i in range(3):  # three other conversations of ~1,900 tokens: more than it holds
        chat(world, [SYSTEM, {"role": "user", "content": f"Other {i}\n" + DOCUMENT}])
    history = [*turn1, {"role": "assistant", "content": answer}]
    _, headers = chat(world, [*history, {"role": "user", "content": "And the fix?"}])
    # Routing sent it home, but the server had dropped all of it but the system prompt: the
    # cache holds fewer tokens than the node took in since (three prompts and answers).
    assert headers["x-clawdbot-affinity"] == "hit"
    deadline = time.monotonic() + 10
    while cache.hget(redis_keys.prefix_cache("small"), "cap") is None:
        # The gateway records what an answer taught just after sending it.
        assert time.monotonic() < deadline, "the cache's size was never learned"
        time.sleep(0.02)  # bounded poll of Redis
    held = float(cache.hget(redis_keys.prefix_cache("small"), "cap") or 0)
    assert 4000 < held < 7000
