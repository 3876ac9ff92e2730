"""Binding a validated request to a node's protocol: what goes upstream and how answers come
back, without sockets."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import GatewayError
from gateway.plan import plan_generation
from gateway.upstreams.adapters import EmbeddingCall, GenerationCall
from gateway.validation import validate_chat, validate_embedding
from tests.gateway.views import PROFILE, node


def _call(body: dict[str, Any], prompt_tokens: int, api_kind: str) -> Any:
    hello = [{"role": "user", "content": "hi"}]
    chat = validate_chat({"model": "qwen3-32b", "messages": hello} | body)
    plan = plan_generation(PROFILE, prompt_tokens, chat.max_tokens)
    return GenerationCall(chat, PROFILE, plan).for_node(node(api_kind))


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
    call = EmbeddingCall(request, PROFILE).for_node(node("ollama"))
    answer = {"model": "qwen3:32b", "embeddings": [[0.1, 0.2]]}
    body, prompt, completion = call.translate(orjson.dumps(answer))
    assert (prompt, completion) == (None, None)  # the reservation stands, nothing refunded
    assert orjson.loads(body)["usage"]["prompt_tokens"] == 0
