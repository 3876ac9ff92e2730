"""Passthrough to OpenAI-compatible upstreams: body preparation, errors, SSE relaying."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.upstreams.openai import SseRelay, normalise_error, prepare_body, rewrite_response

# --- prepare_body ---


def test_model_is_renamed_and_stream_made_explicit() -> None:
    raw = {"model": "gpt-local", "messages": [], "temperature": 0.1}
    body = prepare_body(raw, upstream_model="Qwen/Qwen3-32B", max_tokens=None, stream=False)
    assert body == {
        "model": "Qwen/Qwen3-32B",
        "messages": [],
        "temperature": 0.1,
        "stream": False,
    }
    # The client's dict is untouched, so a retry on another node starts from the original.
    assert raw == {"model": "gpt-local", "messages": [], "temperature": 0.1}


@pytest.mark.parametrize(
    ("client_fields", "expected"),
    [
        ({}, {"max_tokens": 100}),
        ({"max_tokens": 5000}, {"max_tokens": 100}),
        ({"max_completion_tokens": 5000}, {"max_completion_tokens": 100}),
        (
            {"max_tokens": 4000, "max_completion_tokens": 5000},
            {"max_tokens": 100, "max_completion_tokens": 100},
        ),
        ({"max_tokens": None}, {"max_tokens": 100}),
    ],
)
def test_clamped_max_tokens_goes_where_the_client_put_it(
    client_fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    raw = {"model": "m", **client_fields}
    body = prepare_body(raw, upstream_model="u", max_tokens=100, stream=False)
    assert {k: v for k, v in body.items() if "max" in k} == expected


def test_no_gateway_limit_leaves_the_clients_alone() -> None:
    body = prepare_body(
        {"model": "m", "max_tokens": 7}, upstream_model="u", max_tokens=None, stream=False
    )
    assert body["max_tokens"] == 7 and "max_completion_tokens" not in body


def test_include_usage_is_written_out_explicitly() -> None:
    # vLLM turns include_usage on whenever stream_options is present; OpenAI defaults it off.
    raw = {"model": "m", "stream": True, "stream_options": {}}
    body = prepare_body(raw, upstream_model="u", max_tokens=None, stream=True)
    assert body["stream_options"] == {"include_usage": False}
    raw = {"model": "m", "stream": True, "stream_options": {"include_usage": True}}
    body = prepare_body(raw, upstream_model="u", max_tokens=None, stream=True)
    assert body["stream_options"] == {"include_usage": True}
    body = prepare_body({"model": "m"}, upstream_model="u", max_tokens=None, stream=True)
    assert "stream_options" not in body


def test_force_usage_for_accounting() -> None:
    body = prepare_body(
        {"model": "m", "stream": True},
        upstream_model="u",
        max_tokens=None,
        stream=True,
        force_usage=True,
    )
    assert body["stream_options"] == {"include_usage": True}
    body = prepare_body(
        {"model": "m", "stream": True, "stream_options": {"include_usage": False, "x": 1}},
        upstream_model="u",
        max_tokens=None,
        stream=True,
        force_usage=True,
    )
    assert body["stream_options"] == {"include_usage": True, "x": 1}
    # Without a stream there is nothing to ask for.
    body = prepare_body(
        {"model": "m"}, upstream_model="u", max_tokens=None, stream=False, force_usage=True
    )
    assert "stream_options" not in body


def test_rewrite_response_sets_the_clients_model() -> None:
    upstream = orjson.dumps({"id": "x", "model": "Qwen/Qwen3-32B", "choices": []})
    assert orjson.loads(rewrite_response(upstream, "gpt-local")) == {
        "id": "x",
        "model": "gpt-local",
        "choices": [],
    }
    assert rewrite_response(b"not json", "m") == b"not json"
    assert rewrite_response(b"[1]", "m") == b"[1]"


# --- normalise_error ---


def test_vllm_nested_shape_with_integer_code() -> None:
    body = orjson.dumps(
        {
            "error": {
                "message": "temperature must be non-negative",
                "type": "BadRequestError",
                "param": "temperature",
                "code": 400,
            }
        }
    )
    error = normalise_error(400, body)
    assert (error.status, error.type, error.code, error.param) == (
        400,
        "invalid_request_error",
        None,
        "temperature",
    )
    assert error.message == "temperature must be non-negative"
    rendered = orjson.loads(error.body())["error"]
    assert set(rendered) == {"message", "type", "param", "code"}


def test_vllm_old_flat_shape() -> None:
    body = orjson.dumps(
        {
            "object": "error",
            "message": "best_of must be 1",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    )
    error = normalise_error(400, body)
    assert (error.status, error.type, error.code, error.message) == (
        400,
        "invalid_request_error",
        None,
        "best_of must be 1",
    )


def test_ollama_v1_style_string_error() -> None:
    error = normalise_error(400, b'{"error":"invalid message format"}')
    assert (error.status, error.type, error.message) == (
        400,
        "invalid_request_error",
        "invalid message format",
    )


def test_openai_shape_keeps_string_code_and_known_type() -> None:
    body = orjson.dumps(
        {
            "error": {
                "message": "bad key",
                "type": "invalid_request_error",
                "param": None,
                "code": "x",
            }
        }
    )
    error = normalise_error(400, body)
    assert (error.type, error.code) == ("invalid_request_error", "x")


def test_fastapi_validation_error_becomes_400() -> None:
    body = orjson.dumps({"detail": [{"loc": ["body", "foo"], "msg": "extra fields not permitted"}]})
    error = normalise_error(422, body)
    assert error.status == 400 and error.type == "invalid_request_error"
    assert "extra fields not permitted" in error.message


@pytest.mark.parametrize(
    "message",
    [
        "This model's maximum context length is 8192 tokens. However, you requested 8227 tokens "
        "(8000 in the messages, 227 in the completion). Please reduce the length of the messages "
        "or completion.",
        "This model's maximum context length is 4096 tokens. However, your request has 5000 input "
        "tokens. Please reduce the length of the input messages.",
        "'max_tokens' or 'max_completion_tokens' is too large: 4000. This model's maximum context "
        "length is 4096 tokens and your request has 200 input tokens (4000 > 4096 - 200).",
    ],
)
@pytest.mark.parametrize(
    "shape",
    [
        lambda m: {"error": {"message": m, "type": "BadRequestError", "param": None, "code": 400}},
        lambda m: {"object": "error", "message": m, "type": "BadRequestError", "code": 400},
        lambda m: {"error": m},
    ],
)
def test_context_overflow_is_rewritten(message: str, shape: Any) -> None:
    error = normalise_error(400, orjson.dumps(shape(message)))
    assert (error.status, error.type, error.code, error.param) == (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
    )
    assert error.message == message


def test_ollama_v1_context_overflow_is_rewritten_too() -> None:
    body = (
        b'{"error":{"message":"the prompt is longer than the context length","type":"api_error"}}'
    )
    assert normalise_error(400, body).code == "context_length_exceeded"


def test_404_is_model_not_found() -> None:
    body = orjson.dumps(
        {
            "error": {
                "message": "The model `Qwen/Qwen3-32B` does not exist.",
                "type": "NotFoundError",
                "param": None,
                "code": 404,
            }
        }
    )
    error = normalise_error(404, body, model="gpt-local")
    assert (error.status, error.type, error.code, error.param) == (
        404,
        "invalid_request_error",
        "model_not_found",
        "model",
    )
    assert "gpt-local" in error.message and "Qwen" not in error.message
    assert normalise_error(404, body).code == "model_not_found"
    assert normalise_error(404, b'{"error":"model \'x\' not found"}').code == "model_not_found"


@pytest.mark.parametrize("status", [500, 502, 504])
def test_5xx_keep_status_and_become_server_error(status: int) -> None:
    body = orjson.dumps(
        {"error": {"message": "engine crashed", "type": "InternalServerError", "code": status}}
    )
    error = normalise_error(status, body)
    assert (error.status, error.type, error.code) == (status, "server_error", None)
    assert error.message == "The model node failed: engine crashed"


def test_503_carries_retry_after() -> None:
    error = normalise_error(503, b"")
    assert error.status == 503 and error.type == "server_error"
    assert error.headers["retry-after"] == "1"


def test_429_is_rate_limit_with_retry_after() -> None:
    error = normalise_error(429, b'{"error":"slow down"}')
    assert (error.status, error.code) == (429, "rate_limit_exceeded")
    assert error.headers["retry-after"] == "1"


@pytest.mark.parametrize("status", [401, 403])
def test_credential_errors_are_the_gateways_problem(status: int) -> None:
    error = normalise_error(status, b'{"error":{"message":"bad api key"}}')
    assert error.status == 500 and error.type == "server_error"
    assert "credentials" in error.message


@pytest.mark.parametrize(
    "body", [b"<html><body><h1>502 Bad Gateway</h1></body></html>", b"", b"\xff\xfe", b"[1,2]"]
)
def test_non_json_bodies_are_never_echoed(body: bytes) -> None:
    error = normalise_error(502, body)
    assert (error.status, error.type) == (502, "server_error")
    assert "html" not in error.message.lower() and "HTTP 502" in error.message


def test_4xx_without_a_body_gets_a_generic_message() -> None:
    error = normalise_error(400, b"oops")
    assert error.status == 400 and "HTTP 400" in error.message


# --- SseRelay ---


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> bytes:
    obj: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "Qwen/Qwen3-32B",
        "choices": [
            {
                "index": 0,
                "delta": {} if content is None else {"content": content},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
    }
    obj.update(extra)
    return b"data: " + orjson.dumps(obj) + b"\n\n"


USAGE = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,'
    b'"model":"Qwen/Qwen3-32B","choices":[],'
    b'"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}\n\n'
)
DONE = b"data: [DONE]\n\n"
STREAM = (
    chunk("")
    + chunk("Hello")
    + b": ping\n\n"
    + chunk(' "model":"Qwen/Qwen3-32B" \\')
    + chunk(finish="stop")
    + USAGE
    + DONE
)


def payloads(raw: bytes) -> list[Any]:
    out: list[Any] = []
    for event in raw.split(b"\n\n")[:-1]:
        if event.startswith(b":"):
            out.append(event.decode())
        else:
            data = event.removeprefix(b"data: ")
            out.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return out


def relay_all(raw: bytes, *, size: int, **kwargs: Any) -> tuple[SseRelay, bytes]:
    relay = SseRelay("gpt-local", **kwargs)
    out = b"".join(relay.feed(raw[i : i + size]) for i in range(0, len(raw), size))
    return relay, out + relay.finish()


def test_relay_rewrites_model_and_records_the_stream() -> None:
    relay, out = relay_all(STREAM, size=len(STREAM))
    events = payloads(out)
    assert events[-1] == "[DONE]" and events[2] == ": ping"
    objects = [e for e in events if isinstance(e, dict)]
    assert len(objects) == 5
    assert all(e["model"] == "gpt-local" for e in objects)
    # The look-alike inside the content is text, not a key, and survives untouched.
    assert objects[2]["choices"][0]["delta"]["content"] == ' "model":"Qwen/Qwen3-32B" \\'
    assert relay.done and relay.failed is None and relay.finish_reason == "stop"
    assert (relay.prompt_tokens, relay.completion_tokens) == (9, 3)
    assert relay.usage == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
    # Everything else is byte-identical to what the upstream sent.
    assert out == STREAM.replace(b'"model":"Qwen/Qwen3-32B","c', b'"model":"gpt-local","c')


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_split_anywhere_gives_the_same_output(size: int) -> None:
    _, whole = relay_all(STREAM, size=len(STREAM))
    relay, split = relay_all(STREAM, size=size)
    assert split == whole
    assert relay.done and relay.prompt_tokens == 9


def test_crlf_line_ends_are_accepted_even_when_split() -> None:
    crlf = STREAM.replace(b"\n", b"\r\n")
    _, whole = relay_all(STREAM, size=len(STREAM))
    for size in (1, 5, len(crlf)):
        relay, out = relay_all(crlf, size=size)
        assert out == whole and relay.done


def test_mid_stream_vllm_error_becomes_an_openai_error_event() -> None:
    error = {
        "error": {
            "message": "engine step failed",
            "type": "InternalServerError",
            "param": None,
            "code": 500,
        }
    }
    raw = chunk("a") + b"data: " + orjson.dumps(error) + b"\n\n" + DONE
    relay, out = relay_all(raw, size=len(raw))
    events = payloads(out)
    assert events[1] == {
        "error": {
            "message": "The model node failed: engine step failed",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    assert len(events) == 2  # not vLLM's [DONE] after it: the error is the stream's end
    assert relay.failed is not None and relay.failed.status == 500


def test_mid_stream_context_error_keeps_its_code_as_a_string() -> None:
    message = "This model's maximum context length is 10 tokens. However, you requested 20 tokens."
    error = {"error": {"message": message, "type": "BadRequestError", "code": 400}}
    relay, out = relay_all(b"data: " + orjson.dumps(error) + b"\n\n", size=3)
    (event,) = payloads(out)
    assert event["error"]["code"] == "context_length_exceeded"
    assert event["error"]["type"] == "invalid_request_error"
    assert relay.failed is not None and not relay.done


def test_mid_stream_string_error_is_normalised() -> None:
    _, out = relay_all(chunk("a") + b'data: {"error":"engine died"}\n\n', size=4)
    events = payloads(out)
    assert events[-1]["error"]["message"] == "The model node failed: engine died"
    assert events[-1]["error"]["type"] == "server_error"
    # The error is the end of the story: no second error event from finish().
    assert sum(1 for e in events if isinstance(e, dict) and "error" in e) == 1


def test_content_mentioning_error_is_not_an_error() -> None:
    relay, out = relay_all(chunk('"error"') + chunk(finish="stop") + DONE, size=5)
    assert relay.failed is None
    assert payloads(out)[0]["choices"][0]["delta"]["content"] == '"error"'


def test_stream_closed_without_done_ends_with_an_error_event() -> None:
    relay, out = relay_all(chunk("a") + chunk("b"), size=3)
    events = payloads(out)
    assert events[-1]["error"]["type"] == "server_error"
    assert "closed the stream" in events[-1]["error"]["message"]
    assert "[DONE]" not in events and not relay.done and relay.failed is not None


@pytest.mark.parametrize("tail", [b'data: {"id":"chatcmpl-1","mod', b'data: {"id":"cha\n'])
def test_partial_event_at_close_is_dropped_and_reported(tail: bytes) -> None:
    relay, out = relay_all(chunk("a") + tail, size=10)
    events = payloads(out)
    assert len(events) == 2 and "error" in events[1]
    assert relay.failed is not None and relay.failed.status == 502


def test_last_event_without_its_blank_line_still_counts() -> None:
    relay, out = relay_all(chunk("a") + b"data: [DONE]\n", size=10)
    assert payloads(out)[-1] == "[DONE]" and relay.done and relay.failed is None


def test_strip_usage_hides_the_forced_usage_chunk_but_records_it() -> None:
    relay, out = relay_all(STREAM, size=11, strip_usage=True)
    events = payloads(out)
    assert all(e.get("choices") != [] for e in events if isinstance(e, dict))
    assert relay.prompt_tokens == 9 and relay.done


def test_usage_null_on_every_chunk_is_not_mistaken_for_usage() -> None:
    raw = chunk("a", usage=None) + chunk(finish="length", usage=None) + USAGE + DONE
    relay, out = relay_all(raw, size=len(raw))
    assert [e.get("usage") for e in payloads(out)[:2]] == [None, None]
    assert relay.finish_reason == "length" and relay.completion_tokens == 3


def test_non_json_data_is_dropped_and_comments_kept() -> None:
    raw = b": keep-alive\n\ndata: keepalive\n\n" + chunk("a") + DONE
    _, out = relay_all(raw, size=len(raw))
    assert payloads(out)[0] == ": keep-alive"
    assert b"keepalive\n" not in out and len(payloads(out)) == 3


def test_multi_line_and_event_named_events() -> None:
    raw = b'event: message\ndata: {"model":"Qwen/Qwen3-32B",\ndata: "choices":[]}\n\n' + DONE
    relay, out = relay_all(raw, size=4)
    assert payloads(out)[0] == {"model": "gpt-local", "choices": []}
    assert relay.done


def test_spaced_json_from_other_servers_is_rewritten() -> None:
    raw = b'data: {"id": "x", "model": "Qwen/Qwen3-32B", "usage": {"prompt_tokens": 1}}\n\n'
    relay, out = relay_all(raw + raw.replace(b'"x"', b'"y"') + DONE, size=9)
    first, second, _ = payloads(out)
    assert first["model"] == second["model"] == "gpt-local"
    assert relay.prompt_tokens == 1


def test_nested_model_key_before_the_top_level_one_is_handled() -> None:
    raw = b'data: {"meta":{"model":"inner"},"model":"Qwen/Qwen3-32B","choices":[]}\n\n'
    _, out = relay_all(raw + DONE, size=len(raw))
    event, _ = payloads(out)
    assert event == {"meta": {"model": "inner"}, "model": "gpt-local", "choices": []}


def test_client_model_ids_needing_escapes() -> None:
    relay = SseRelay('odd"name')
    out = relay.feed(chunk("a"))
    assert payloads(out)[0]["model"] == 'odd"name'
