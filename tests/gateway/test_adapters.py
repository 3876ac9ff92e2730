"""Binding a validated request to a node's protocol: what goes upstream and how answers come
back, without sockets."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import GatewayError
from gateway.plan import plan_generation
from gateway.snapshot import NodeView, ProfileView
from gateway.upstreams.adapters import EmbeddingCall, GenerationCall
from gateway.validation import validate_chat, validate_embedding

PROFILE = ProfileView(
    id=1,
    model_id="qwen3-32b",
    upstream_model="qwen3:32b",
    display_name="Qwen3 32B",
    context_window=8192,
    max_output_tokens=1024,
    keep_alive="5m",
    fallback=None,
    min_vram_gb=0.0,
    created=0,
)


def _node(api_kind: str) -> NodeView:
    return NodeView(
        id=1, name="n", base_url="http://127.0.0.1:9", api_kind=api_kind, gpu_type="A100",
        gpu_count=1, total_vram_gb=80.0, max_concurrent=4, queue_size=0, state="READY",
        enabled=True, draining=False, weight=1.0,
    )  # fmt: skip


def _call(body: dict[str, Any], prompt_tokens: int, api_kind: str) -> Any:
    hello = [{"role": "user", "content": "hi"}]
    chat = validate_chat({"model": "qwen3-32b", "messages": hello} | body)
    plan = plan_generation(PROFILE, prompt_tokens, chat.max_tokens)
    return GenerationCall(chat, PROFILE, plan).for_node(_node(api_kind))


@pytest.mark.parametrize(
    ("body", "prompt_tokens", "sent"),
    [
        ({}, 100, 1024),  # the profile's maximum binds: vLLM must not run to the window's end
        ({}, 7500, None),  # the window's room binds: the node's exact count knows it best
        ({"max_tokens": 50}, 100, 50),
        ({"max_tokens": 5000}, 100, 1024),  # clamped
    ],
)
def test_an_openai_node_always_gets_the_profiles_output_cap(
    body: dict[str, Any], prompt_tokens: int, sent: int | None
) -> None:
    upstream = orjson.loads(_call(body, prompt_tokens, "openai").body)
    assert upstream.get("max_tokens") == sent


def test_a_200_that_is_not_json_is_a_node_failure_not_an_answer() -> None:
    for kind in ("openai", "ollama"):
        with pytest.raises(GatewayError) as info:
            _call({}, 10, kind).translate(b"<html>proxy error</html>")
        assert info.value.status == 502


def test_a_prompt_count_ollama_left_out_is_unknown_not_zero() -> None:
    answer = {
        "model": "qwen3:32b",
        "message": {"role": "assistant", "content": "hello"},
        "done": True,
        "done_reason": "stop",
        "eval_count": 2,
    }
    body, prompt, completion = _call({}, 10, "ollama").translate(orjson.dumps(answer))
    assert (prompt, completion) == (None, 2)
    assert orjson.loads(body)["usage"]["prompt_tokens"] == 0  # the wire shape needs a number


def test_an_embedding_count_ollama_left_out_is_unknown_not_zero() -> None:
    request = validate_embedding({"model": "qwen3-32b", "input": "hello"})
    call = EmbeddingCall(request, PROFILE).for_node(_node("ollama"))
    answer = {"model": "qwen3:32b", "embeddings": [[0.1, 0.2]]}
    body, prompt, completion = call.translate(orjson.dumps(answer))
    assert (prompt, completion) == (None, None)  # the reservation stands, nothing refunded
    assert orjson.loads(body)["usage"]["prompt_tokens"] == 0
