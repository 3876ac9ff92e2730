"""Answers the gateway gives itself in a degradation tier, read back with the official openai
client's own types."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gateway.degraded_answers import (
    cached_answer,
    sse_replay,
    static_answer,
    unavailable,
    usage_counts,
)

CHAT: dict[str, Any] = {
    "id": "chatcmpl-old",
    "object": "chat.completion",
    "created": 1,
    "model": "qwen3-32b",
    "system_fingerprint": "fp_ollama",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi there", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}


def events(stream: bytes) -> list[Any]:
    """The data of each SSE event; [DONE] as the string."""
    assert stream.endswith(b"data: [DONE]\n\n")
    out: list[Any] = []
    for event in stream.split(b"\n\n")[:-1]:
        assert event.startswith(b"data: ")
        data = event.removeprefix(b"data: ")
        out.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return out


def test_a_cached_answer_is_a_new_response_with_the_same_content() -> None:
    answer = cached_answer(orjson.dumps(CHAT), "chat")
    assert answer is not None
    parsed = ChatCompletion.model_validate(answer)
    assert parsed.id.startswith("chatcmpl-") and parsed.id != "chatcmpl-old"
    assert parsed.created > 1
    assert parsed.choices[0].message.content == "Hi there"
    assert usage_counts(answer) == (9, 2)


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[]", orjson.dumps({**CHAT, "object": "text_completion"}), b'{"choices":[]}'],
)
def test_a_stored_entry_that_is_not_this_endpoint_s_answer_is_no_answer(raw: bytes) -> None:
    assert cached_answer(raw, "chat") is None


def test_a_chat_answer_replays_as_the_chunks_of_a_stream() -> None:
    stream = events(sse_replay(CHAT, include_usage=True))
    *chunks, usage, done = stream
    assert done == "[DONE]"
    parsed = [ChatCompletionChunk.model_validate(c) for c in chunks]
    assert parsed[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in parsed) == "Hi there"
    assert [c.choices[0].finish_reason for c in parsed][-1] == "stop"
    assert all(c["usage"] is None for c in chunks)
    assert {c.id for c in parsed} == {"chatcmpl-old"} and parsed[0].model == "qwen3-32b"
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 11
    without = events(sse_replay(CHAT, include_usage=False))
    assert len(without) == len(stream) - 1 and "usage" not in without[0]


def test_tool_calls_replay_with_their_index() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
    answer = {**CHAT, "choices": [{**CHAT["choices"][0], "message": message}]}
    answer["choices"][0]["finish_reason"] = "tool_calls"
    chunks = [
        ChatCompletionChunk.model_validate(c)
        for c in events(sse_replay(answer, include_usage=False))[:-1]
    ]
    (calls,) = [c.choices[0].delta.tool_calls for c in chunks if c.choices[0].delta.tool_calls]
    assert calls[0].index == 0 and calls[0].function is not None
    assert calls[0].function.name == "f" and chunks[-1].choices[0].finish_reason == "tool_calls"


def test_the_static_answer_is_a_valid_answer_of_either_endpoint() -> None:
    chat = ChatCompletion.model_validate(static_answer("chat", "Busy, sorry.", model="m"))
    assert chat.choices[0].message.content == "Busy, sorry." and chat.model == "m"
    assert chat.usage is not None and chat.usage.total_tokens == 0
    text = Completion.model_validate(static_answer("completions", "Busy.", model="m"))
    assert text.choices[0].text == "Busy." and text.id.startswith("cmpl-")
    chunks = events(
        sse_replay(static_answer("completions", "Busy.", model="m"), include_usage=False)
    )
    # The SDK's Completion type allows no null finish_reason, but streams send one until the
    # end (OpenAI's too: the SDK builds chunks without validating them).
    assert [c["object"] for c in chunks[:-1]] == ["text_completion"] * 2
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == "Busy."
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, "stop"]


def test_unavailable_is_a_503_with_a_bounded_retry_after() -> None:
    error = unavailable("qwen3-32b", 30)
    assert (error.status, error.code) == (503, "service_unavailable")
    assert error.headers == {"retry-after": "30", "x-clawdbot-degraded": "unavailable"}
    assert unavailable("m", 0).headers["retry-after"] == "1"
    assert unavailable("m", 600).headers["retry-after"] == "120"
