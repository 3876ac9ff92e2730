"""PROTOCOLS.md section 5: every row of the OpenAI <-> Ollama mapping tables."""

from __future__ import annotations

import base64
import dataclasses
import math
import struct
from typing import Any

import orjson
import pytest

from gateway.errors import GatewayError, model_not_found
from gateway.upstreams.ollama import (
    ChatStreamTranslator,
    CompletionStreamTranslator,
    chat_to_ollama,
    completion_to_ollama,
    embedding_to_ollama,
    ollama_chat_to_openai,
    ollama_embed_to_openai,
    ollama_error,
    ollama_generate_to_openai,
)
from gateway.validation import validate_chat, validate_completion, validate_embedding

PNG = "iVBORw0KGgo="


def to_ollama(max_tokens: int | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "qwen", "messages": [{"role": "user", "content": "Hi"}]}
    body.update(fields)
    return chat_to_ollama(
        validate_chat(body),
        upstream_model="qwen3:32b",
        num_ctx=8192,
        keep_alive="10m",
        max_tokens=max_tokens,
    )


def refused(**fields: Any) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        to_ollama(**fields)
    assert caught.value.status == 400
    assert caught.value.type == "invalid_request_error"
    return caught.value


# --- 5.1 request ---


def test_minimal_request_carries_gateway_policy() -> None:
    assert to_ollama() == {
        "model": "qwen3:32b",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": False,
        "options": {"num_ctx": 8192},
        "keep_alive": "10m",
        "truncate": False,
        "shift": False,
    }


def test_stream_is_always_explicit() -> None:
    assert to_ollama(stream=True)["stream"] is True
    assert to_ollama(stream=True, stream_options={"include_usage": True})["stream"] is True
    assert to_ollama()["stream"] is False


def test_include_usage_is_not_sent_to_the_node() -> None:
    body = to_ollama(stream=True, stream_options={"include_usage": True})
    assert "stream_options" not in body


def test_developer_role_becomes_system() -> None:
    body = to_ollama(
        messages=[{"role": "developer", "content": "rules"}, {"role": "user", "content": "x"}]
    )
    assert body["messages"][0] == {"role": "system", "content": "rules"}


def test_content_parts_are_joined_and_data_uri_images_extracted() -> None:
    parts = [
        {"type": "text", "text": "first"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "text", "text": "second"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/", "detail": "low"}},
    ]
    body = to_ollama(messages=[{"role": "user", "content": parts}])
    assert body["messages"] == [
        {"role": "user", "content": "first\nsecond", "images": [PNG, "/9j/"]}
    ]


@pytest.mark.parametrize("url", ["http://example.com/cat.png", "https://example.com/cat.png"])
def test_remote_image_urls_are_refused(url: str) -> None:
    parts = [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": url}}]
    error = refused(messages=[{"role": "user", "content": parts}])
    assert error.param == "messages[0].content[1].image_url.url"
    assert "not supported" in error.message and "base64 data URI" in error.message


@pytest.mark.parametrize("url", ["data:image/png,rawbytes", "data:image/png;base64,", "ftp://x"])
def test_malformed_image_uris_are_refused(url: str) -> None:
    parts = [{"type": "image_url", "image_url": {"url": url}}]
    error = refused(messages=[{"role": "user", "content": parts}])
    assert error.param == "messages[0].content[0].image_url.url"
    assert "base64" in error.message


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_tool_call_history_is_translated() -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                _call("call_1", "weather", '{"city": "Oslo"}'),
                _call("call_2", "clock", ""),
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
        {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
        {"role": "tool", "tool_call_id": "call_unknown", "content": "?"},
    ]
    native = to_ollama(messages=messages)["messages"]
    assert native[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "function": {"index": 0, "name": "weather", "arguments": {"city": "Oslo"}},
            },
            {"id": "call_2", "function": {"index": 1, "name": "clock", "arguments": {}}},
        ],
    }
    assert native[2] == {
        "role": "tool",
        "content": "rain",
        "tool_call_id": "call_1",
        "tool_name": "weather",
    }
    assert native[3]["tool_name"] == "clock"
    assert "tool_name" not in native[4] and native[4]["tool_call_id"] == "call_unknown"


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", '"text"'])
def test_bad_tool_call_arguments_are_refused(arguments: str) -> None:
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "", "tool_calls": [_call("c", "f", arguments)]},
    ]
    error = refused(messages=messages)
    assert error.param == "messages[1].tool_calls"
    assert "JSON object" in error.message


def test_assistant_reasoning_history_is_sent_as_thinking() -> None:
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "y", "reasoning_content": "because"},
        {"role": "user", "content": "z"},
    ]
    assert to_ollama(messages=messages)["messages"][1]["thinking"] == "because"


def test_max_tokens_and_sampling_options() -> None:
    body = to_ollama(
        max_tokens=100,
        temperature=0.2,
        top_p=0.9,
        seed=42,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        stop="###",
        top_k=20,
        min_p=0.1,
    )
    assert body["options"] == {
        "num_ctx": 8192,
        "num_predict": 100,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 20,
        "min_p": 0.1,
        "seed": 42,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "stop": ["###"],
    }


def test_the_gateways_max_tokens_wins_over_the_clients() -> None:
    # The caller passes the clamped value; the client's own value is only an input to it.
    assert to_ollama(max_tokens=50, max_completion_tokens=4000)["options"]["num_predict"] == 50
    assert "num_predict" not in to_ollama(max_tokens=None)["options"]


def test_stop_array_is_kept() -> None:
    assert to_ollama(stop=["a", "b"])["options"]["stop"] == ["a", "b"]


def test_response_formats() -> None:
    assert to_ollama(response_format={"type": "json_object"})["format"] == "json"
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    assert to_ollama(response_format=fmt)["format"] == schema
    assert "format" not in to_ollama(response_format={"type": "text"})


TOOLS = [
    {
        "type": "function",
        "function": {"name": "weather", "description": "d", "parameters": {"type": "object"}},
    }
]


def test_tools_pass_in_the_same_shape() -> None:
    assert to_ollama(tools=TOOLS)["tools"] == TOOLS
    assert to_ollama(tools=TOOLS, tool_choice="auto")["tools"] == TOOLS


def test_tool_choice_none_withholds_the_tools() -> None:
    assert "tools" not in to_ollama(tools=TOOLS, tool_choice="none")


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "weather"}}]
)
def test_forced_tool_choice_is_refused(choice: object) -> None:
    error = refused(tools=TOOLS, tool_choice=choice)
    assert error.param == "tool_choice"
    assert "not supported by this model's node" in error.message


def test_dropped_fields_do_not_reach_the_node() -> None:
    body = to_ollama(parallel_tool_calls=False, logit_bias={"1": 2}, user="u", n=1)
    assert not {"parallel_tool_calls", "logit_bias", "user", "n"} & body.keys()


def test_n_above_one_is_refused_before_translation() -> None:
    with pytest.raises(GatewayError) as caught:
        validate_chat({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2})
    assert (caught.value.status, caught.value.param) == (400, "n")


@pytest.mark.parametrize(
    ("effort", "think"),
    [("none", False), ("minimal", "low"), ("low", "low"), ("medium", "medium"), ("high", "high")],
)
def test_reasoning_effort_maps_to_think(effort: str, think: object) -> None:
    assert to_ollama(reasoning_effort=effort)["think"] == think
    assert "think" not in to_ollama()


def test_logprobs_keep_their_names() -> None:
    body = to_ollama(logprobs=True, top_logprobs=5)
    assert (body["logprobs"], body["top_logprobs"]) == (True, 5)
    assert "logprobs" not in to_ollama(logprobs=False)


def test_keep_alive_may_be_seconds() -> None:
    req = validate_chat({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    body = chat_to_ollama(req, upstream_model="m", num_ctx=2048, keep_alive=-1, max_tokens=1)
    assert body["keep_alive"] == -1 and body["options"]["num_ctx"] == 2048


def test_empty_messages_are_refused_as_they_would_be_a_preload() -> None:
    req = validate_chat({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(GatewayError) as caught:
        chat_to_ollama(
            dataclasses.replace(req, messages=[]),
            upstream_model="m",
            num_ctx=1,
            keep_alive=0,
            max_tokens=None,
        )
    assert (caught.value.status, caught.value.param) == (400, "messages")


# --- /api/generate and /api/embed requests ---


def generate(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "qwen", "prompt": "Once"}
    body.update(fields)
    return completion_to_ollama(
        validate_completion(body),
        upstream_model="qwen3:32b",
        num_ctx=4096,
        keep_alive="5m",
        max_tokens=16,
    )


def test_completion_request() -> None:
    assert generate(suffix="end", temperature=0.5, stop="\n", stream=True) == {
        "model": "qwen3:32b",
        "prompt": "Once",
        "suffix": "end",
        "stream": True,
        "options": {"num_ctx": 4096, "num_predict": 16, "temperature": 0.5, "stop": ["\n"]},
        "keep_alive": "5m",
        "truncate": False,
        "shift": False,
    }
    # The template applies (no raw mode), as with Ollama's own /v1/completions.
    assert "raw" not in generate()
    assert generate(prompt=["only one"])["prompt"] == "only one"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": [""]}, "prompt"),
        ({"echo": True}, "echo"),
        ({"logprobs": 2}, "logprobs"),
    ],
)
def test_completion_features_the_node_lacks_are_refused(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as caught:
        generate(**fields)
    assert (caught.value.status, caught.value.param) == (400, param)


def test_embedding_request() -> None:
    req = validate_embedding({"model": "e", "input": ["a", "b"]})
    assert embedding_to_ollama(req, upstream_model="nomic", keep_alive="5m", num_ctx=2048) == {
        "model": "nomic",
        "input": ["a", "b"],
        "keep_alive": "5m",
        "truncate": False,
        "options": {"num_ctx": 2048},
    }
    assert "options" not in embedding_to_ollama(req, upstream_model="nomic", keep_alive=0)


# --- non-streaming responses ---


def chat_response(**fields: Any) -> dict[str, Any]:
    resp: dict[str, Any] = {
        "model": "qwen3:32b",
        "created_at": "2025-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": "Hello!"},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 12,
        "eval_count": 3,
    }
    resp.update(fields)
    return resp


def openai_chat(resp: dict[str, Any]) -> dict[str, Any]:
    return ollama_chat_to_openai(resp, model="gpt-local", completion_id="chatcmpl-x", created=7)


def test_chat_completion_shape() -> None:
    assert openai_chat(chat_response()) == {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 7,
        "model": "gpt-local",
        "system_fingerprint": "fp_ollama",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello!", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


@pytest.mark.parametrize(
    ("done_reason", "tool_calls", "finish_reason"),
    [
        ("stop", False, "stop"),
        ("stop", True, "tool_calls"),
        ("length", False, "length"),
        (None, False, "stop"),
        ("", False, "stop"),
    ],
)
def test_finish_reason_table(done_reason: str | None, tool_calls: bool, finish_reason: str) -> None:
    message: dict[str, Any] = {"role": "assistant", "content": "x"}
    if tool_calls:
        message["tool_calls"] = [{"function": {"name": "f", "arguments": {}}}]
    resp = chat_response(message=message)
    if done_reason is None:
        del resp["done_reason"]
    else:
        resp["done_reason"] = done_reason
    assert openai_chat(resp)["choices"][0]["finish_reason"] == finish_reason


def test_tool_calls_get_ids_and_string_arguments() -> None:
    message = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"function": {"index": 0, "name": "weather", "arguments": {"city": "Oslo"}}},
            {"id": "call_given", "function": {"index": 1, "name": "clock", "arguments": {}}},
        ],
    }
    choice = openai_chat(chat_response(message=message))["choices"][0]
    first, second = choice["message"]["tool_calls"]
    assert first["id"].startswith("call_") and len(first["id"]) > 10
    assert first == {
        "id": first["id"],
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
    }
    assert second["id"] == "call_given" and second["function"]["arguments"] == "{}"
    # A pure tool call answers with null content, as OpenAI does.
    assert choice["message"]["content"] is None
    assert choice["finish_reason"] == "tool_calls"


def test_thinking_becomes_reasoning_content() -> None:
    message = {"role": "assistant", "content": "4", "thinking": "2+2"}
    out = openai_chat(chat_response(message=message))["choices"][0]["message"]
    assert out["reasoning_content"] == "2+2" and out["content"] == "4"


def test_missing_counts_are_zero_in_usage() -> None:
    resp = chat_response()
    del resp["prompt_eval_count"], resp["eval_count"]
    assert openai_chat(resp)["usage"] == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
    }


def test_logprobs_are_passed_in_openai_shape() -> None:
    entries = [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}]
    choice = openai_chat(chat_response(logprobs=entries))["choices"][0]
    assert choice["logprobs"] == {"content": entries, "refusal": None}


def test_text_completion_shape() -> None:
    resp = {"response": "upon a time", "done": True, "done_reason": "length", "eval_count": 4}
    assert ollama_generate_to_openai(resp, model="m", completion_id="cmpl-1", created=3) == {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 3,
        "model": "m",
        "system_fingerprint": "fp_ollama",
        "choices": [
            {"text": "upon a time", "index": 0, "logprobs": None, "finish_reason": "length"}
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 4, "total_tokens": 4},
    }


EMBED = {
    "model": "nomic",
    "embeddings": [[3.0, 4.0, 12.0], [1.0, 0.0, 0.0]],
    "prompt_eval_count": 5,
}


def test_embeddings_as_floats() -> None:
    assert ollama_embed_to_openai(EMBED, "text-embedding") == {
        "object": "list",
        "data": [
            {"object": "embedding", "embedding": [3.0, 4.0, 12.0], "index": 0},
            {"object": "embedding", "embedding": [1.0, 0.0, 0.0], "index": 1},
        ],
        "model": "text-embedding",
        "usage": {"prompt_tokens": 5, "total_tokens": 5},
    }


def test_embeddings_as_base64_little_endian_float32() -> None:
    out = ollama_embed_to_openai(EMBED, "e", encoding_format="base64")
    raw = base64.b64decode(out["data"][0]["embedding"])
    assert struct.unpack("<3f", raw) == (3.0, 4.0, 12.0)


def test_dimensions_truncate_and_renormalise() -> None:
    out = ollama_embed_to_openai(EMBED, "e", dimensions=2)
    assert out["data"][0]["embedding"] == [0.6, 0.8]
    assert math.isclose(sum(x * x for x in out["data"][0]["embedding"]), 1.0)
    assert out["data"][1]["embedding"] == [1.0, 0.0]


def test_dimensions_beyond_the_model_are_refused() -> None:
    with pytest.raises(GatewayError) as caught:
        ollama_embed_to_openai(EMBED, "e", dimensions=4)
    assert (caught.value.status, caught.value.param) == (400, "dimensions")
    assert "3-dimensional" in caught.value.message


# --- errors before the first byte ---


def test_400_stays_400() -> None:
    error = ollama_error(400, b'{"error":"\\"qwen\\" does not support tools"}')
    assert (error.status, error.type, error.code) == (400, "invalid_request_error", None)
    assert error.message == '"qwen" does not support tools'


def test_context_overflow_becomes_context_length_exceeded() -> None:
    body = orjson.dumps(
        {
            "error": "the prompt is longer than the context length currently available to the "
            "model; reduce the prompt or raise num_ctx"
        }
    )
    error = ollama_error(400, body)
    assert (error.status, error.code, error.param) == (400, "context_length_exceeded", "messages")
    assert "maximum context length" in error.message and "longer than" in error.message


@pytest.mark.parametrize(
    "body",
    [b'{"error":"model \'x\' not found"}', b'{"error":"model \\"x\\" not found, try pulling"}'],
)
def test_404_is_model_not_found_under_the_clients_name(body: bytes) -> None:
    error = ollama_error(404, body, model="my-model")
    assert (error.status, error.code, error.param) == (404, "model_not_found", "model")
    # The client's model id, never the node's internal name.
    assert error.message == model_not_found("my-model").message
    assert ollama_error(404, body).code == "model_not_found"


@pytest.mark.parametrize("status", [503, 499])
def test_busy_node_is_503_with_retry_after(status: int) -> None:
    error = ollama_error(status, b'{"error":"server busy, please try again.  maximum pending"}')
    assert error.status == 503 and error.type == "server_error"
    assert error.headers["retry-after"] == "1"


@pytest.mark.parametrize("status", [500, 502, 403])
def test_other_statuses_are_server_errors_from_the_node(status: int) -> None:
    error = ollama_error(status, b'{"error":"llama runner process has terminated\\ntrace..."}')
    assert (error.status, error.type, error.code) == (500, "server_error", None)
    assert error.message == "The model node failed: llama runner process has terminated"


def test_non_json_error_bodies_are_not_echoed() -> None:
    error = ollama_error(500, b"<html><body>panic: goroutine 1</body></html>")
    assert error.status == 500 and "html" not in error.message and "panic" not in error.message
    assert "HTTP 500" in error.message


# --- 5.2 streaming ---


def events(raw: bytes) -> list[Any]:
    """Parse SSE bytes into JSON payloads (and the string "[DONE]")."""
    assert raw.endswith(b"\n\n") or raw == b""
    out: list[Any] = []
    for event in raw.split(b"\n\n")[:-1]:
        assert event.startswith(b"data: ")
        payload = event[6:]
        out.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    return out


def line(content: str = "", **message: Any) -> dict[str, Any]:
    return {
        "model": "qwen3:32b",
        "created_at": "2025-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": content, **message},
        "done": False,
    }


def done_line(content: str = "", **fields: Any) -> dict[str, Any]:
    obj = line(content)
    obj.update(
        done=True,
        done_reason="stop",
        prompt_eval_count=10,
        eval_count=5,
        total_duration=1,
        eval_duration=1,
    )
    obj.update(fields)
    return obj


def run_chat(lines: list[dict[str, Any]], include_usage: bool = False) -> tuple[Any, list[Any]]:
    translator = ChatStreamTranslator("gpt-local", "chatcmpl-abc", 1700000000, include_usage)
    raw = b"".join(translator.feed(obj) for obj in lines) + translator.finish()
    return translator, events(raw)


def deltas(chunks: list[Any]) -> list[Any]:
    return [c["choices"][0]["delta"] for c in chunks if isinstance(c, dict) and c.get("choices")]


def test_plain_stream_sequence() -> None:
    translator, chunks = run_chat([line("Hel"), line("lo"), done_line("!")])
    assert chunks[-1] == "[DONE]"
    body = chunks[:-1]
    assert deltas(body) == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
        {"content": "!"},
        {},
    ]
    for chunk in body:
        assert chunk["id"] == "chatcmpl-abc"
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["created"] == 1700000000
        assert chunk["model"] == "gpt-local"
        assert chunk["system_fingerprint"] == "fp_ollama"
        assert "usage" not in chunk
        assert chunk["choices"][0]["index"] == 0 and chunk["choices"][0]["logprobs"] is None
    assert [c["choices"][0]["finish_reason"] for c in body] == [None] * 4 + ["stop"]
    assert translator.done and translator.error is None
    assert (translator.prompt_tokens, translator.completion_tokens) == (10, 5)
    assert translator.finish_reason == "stop" and translator.first_content_emitted


def test_include_usage_adds_a_usage_chunk_and_null_everywhere_else() -> None:
    _, chunks = run_chat([line("a"), done_line()], include_usage=True)
    assert chunks[-1] == "[DONE]"
    usage_chunk = chunks[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    assert usage_chunk["id"] == "chatcmpl-abc" and usage_chunk["model"] == "gpt-local"
    for chunk in chunks[:-2]:
        assert "usage" in chunk and chunk["usage"] is None


def test_missing_prompt_eval_count_is_unknown_not_zero() -> None:
    final = done_line()
    del final["prompt_eval_count"]
    translator, chunks = run_chat([line("a"), final], include_usage=True)
    assert translator.prompt_tokens is None and translator.completion_tokens == 5
    assert chunks[-2]["usage"] == {"prompt_tokens": 0, "completion_tokens": 5, "total_tokens": 5}


def test_empty_pieces_emit_nothing() -> None:
    translator = ChatStreamTranslator("m", "id", 1, False)
    first = translator.feed(line(""))
    assert len(events(first)) == 1  # only the role chunk
    assert not translator.first_content_emitted
    assert translator.feed(line("")) == b""


def test_thinking_streams_as_reasoning_content() -> None:
    _, chunks = run_chat(
        [line("", thinking="Let me"), line("", thinking=" think"), line("4"), done_line()]
    )
    assert deltas(chunks)[1:4] == [
        {"reasoning_content": "Let me"},
        {"reasoning_content": " think"},
        {"content": "4"},
    ]


def test_tool_calls_stream_whole_and_switch_the_finish_reason() -> None:
    calls1 = [{"function": {"index": 0, "name": "weather", "arguments": {"city": "Oslo"}}}]
    calls2 = [{"id": "call_x", "function": {"index": 0, "name": "clock", "arguments": {}}}]
    translator, chunks = run_chat(
        [line("", tool_calls=calls1), line("", tool_calls=calls2), done_line()]
    )
    tool_deltas = [d["tool_calls"] for d in deltas(chunks) if "tool_calls" in d]
    assert len(tool_deltas) == 2
    (first,), (second,) = tool_deltas
    assert first["id"].startswith("call_")
    assert first == {
        "index": 0,
        "id": first["id"],
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
    }
    assert second == {
        "index": 1,
        "id": "call_x",
        "type": "function",
        "function": {"name": "clock", "arguments": "{}"},
    }
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert translator.finish_reason == "tool_calls"


def test_length_and_missing_done_reason() -> None:
    _, chunks = run_chat([line("a"), done_line(done_reason="length")])
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    final = done_line()
    del final["done_reason"]
    _, chunks = run_chat([line("a"), final])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_logprobs_ride_on_their_chunk() -> None:
    entries = [{"token": "a", "logprob": -0.5, "top_logprobs": []}]
    obj = line("a")
    obj["logprobs"] = entries
    _, chunks = run_chat([obj, done_line()])
    assert chunks[1]["choices"][0]["logprobs"] == {"content": entries, "refusal": None}
    assert chunks[1]["choices"][0]["delta"] == {"content": "a"}


def test_error_line_mid_stream_ends_with_an_error_event() -> None:
    translator = ChatStreamTranslator("m", "id", 1, True)
    translator.feed(line("partial"))
    raw = translator.feed({"error": "CUDA error: out of memory"})
    assert raw == (
        b'data: {"error":{"message":"The model node failed: CUDA error: out of memory",'
        b'"type":"server_error","param":null,"code":null}}\n\n'
    )
    assert translator.error is not None and translator.error.type == "server_error"
    assert not translator.done
    # Nothing follows the error: no finish chunk, no usage, no [DONE].
    assert translator.feed(done_line()) == b""
    assert translator.finish() == b""


def test_error_as_the_first_line_sends_no_role_chunk() -> None:
    # The caller may still turn this into a real status since nothing else was produced.
    translator, chunks = run_chat([{"error": "model runner crashed"}])
    assert len(chunks) == 1 and "error" in chunks[0]
    assert translator.error is not None and not translator.first_content_emitted


def test_stream_closed_without_done_gets_an_error_not_done() -> None:
    translator = ChatStreamTranslator("m", "id", 1, True)
    translator.feed(line("partial"))
    raw = translator.finish()
    (event,) = events(raw)
    assert event["error"]["type"] == "server_error"
    assert event["error"]["param"] is None and event["error"]["code"] is None
    assert "closed the stream" in event["error"]["message"]
    assert b"[DONE]" not in raw
    assert translator.error is not None and not translator.done
    assert translator.finish_reason is None and translator.completion_tokens is None
    assert translator.finish() == b""


def test_finish_after_done_adds_nothing() -> None:
    translator = ChatStreamTranslator("m", "id", 1, False)
    translator.feed(done_line("all at once"))
    assert translator.finish() == b""
    assert translator.feed(line("late")) == b""


def test_a_non_streaming_style_single_done_line_streams_fully() -> None:
    _, chunks = run_chat([done_line("whole answer")])
    assert deltas(chunks) == [{"role": "assistant", "content": ""}, {"content": "whole answer"}, {}]


def test_text_needing_escapes_is_valid_json() -> None:
    text = 'quote " backslash \\ newline \n unicode é 🙂 \u2028'
    _, chunks = run_chat([line(text), done_line()])
    assert deltas(chunks)[1] == {"content": text}


# --- completion streams ---


def gen_line(text: str, **fields: Any) -> dict[str, Any]:
    return {
        "model": "q",
        "created_at": "2025-01-01T00:00:00Z",
        "response": text,
        "done": False,
        **fields,
    }


def test_completion_stream_sequence() -> None:
    translator = CompletionStreamTranslator("m", "cmpl-1", 5, include_usage=True)
    raw = b"".join(
        [
            translator.feed(gen_line("upon")),
            translator.feed(gen_line(" a", thinking="ignored")),
            translator.feed(
                gen_line(
                    " time", done=True, done_reason="length", prompt_eval_count=2, eval_count=3
                )
            ),
            translator.finish(),
        ]
    )
    chunks = events(raw)
    assert chunks[-1] == "[DONE]"
    assert chunks[-2]["choices"] == [] and chunks[-2]["usage"]["total_tokens"] == 5
    texts = [c["choices"][0] for c in chunks[:-2]]
    assert texts == [
        {"text": "upon", "index": 0, "logprobs": None, "finish_reason": None},
        {"text": " a", "index": 0, "logprobs": None, "finish_reason": None},
        {"text": " time", "index": 0, "logprobs": None, "finish_reason": None},
        {"text": "", "index": 0, "logprobs": None, "finish_reason": "length"},
    ]
    for chunk in chunks[:-1]:
        assert chunk["object"] == "text_completion" and chunk["id"] == "cmpl-1"
        assert chunk["model"] == "m" and chunk["created"] == 5
    assert all(chunk["usage"] is None for chunk in chunks[:-2])
    assert translator.done and translator.finish_reason == "length"


def test_completion_stream_errors() -> None:
    translator = CompletionStreamTranslator("m", "cmpl-1", 5)
    translator.feed(gen_line("a"))
    (event,) = events(translator.feed({"error": "boom"}))
    assert event["error"]["message"] == "The model node failed: boom"
    assert translator.finish() == b""

    translator = CompletionStreamTranslator("m", "cmpl-1", 5)
    translator.feed(gen_line("a"))
    (event,) = events(translator.finish())
    assert "closed the stream" in event["error"]["message"] and not translator.done
