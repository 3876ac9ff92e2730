"""Every field of every endpoint, given every JSON type (Hypothesis): the path from raw body
to the bytes a node is sent, in process, answers a 4xx or a request for the node, and never
raises anything else (the gateway would answer 500). tests/test_fuzz_gateway.py does the same
against a real gateway process, with fewer cases."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.endpoints import prepare
from gateway.errors import GatewayError
from gateway.exchange import Exchange
from gateway.snapshot import Snapshot
from gateway.validation import MAX_JSON_DEPTH, parse_body
from tests.gateway import views
from tests.gateway.views import node, profile

PROFILE = profile(model_id="m", context_window=4096, max_output_tokens=512)
KEY = replace(views.KEY, rpm_limit=None, tpm_limit=None)
SNAPSHOT = Snapshot(version=1, built_at=0.0, profiles={"m": PROFILE})
NODES = [node("ollama"), node("openai")]

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
BASES: dict[str, dict[str, Any]] = {
    "chat": {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
        "max_tokens": 16,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["\n"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [TOOL],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "seed": 1,
        "n": 1,
        "user": "u",
        "metadata": {"a": "b"},
        "logit_bias": {"1": 1},
        "presence_penalty": 0.1,
        "frequency_penalty": 0.1,
        "reasoning_effort": "low",
    },
    "completions": {
        "model": "m",
        "prompt": "hello",
        "suffix": "end",
        "max_tokens": 16,
        "echo": False,
        "stream": False,
        "stop": "\n",
        "temperature": 1.0,
    },
    "embeddings": {
        "model": "m",
        "input": ["a", "b"],
        "encoding_format": "base64",
        "dimensions": 8,
    },
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a body a value could be swapped."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            found += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += paths(v, (*prefix, i))
    return found


def replaced(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    target: Any = body
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return body


def served(endpoint: str, raw: bytes) -> None:
    """What the gateway does with a body before and while it calls a node, for both kinds of
    node. Client errors are GatewayErrors with a 4xx; anything else fails the test."""
    try:
        payload = parse_body(raw)
        call = prepare(endpoint, payload, SNAPSHOT, Exchange(endpoint, key=KEY))
        for node in NODES:
            node_call = call.for_node(node)
            assert isinstance(node_call.body, bytes) and node_call.path.startswith("/")
    except GatewayError as error:
        assert 400 <= error.status < 500, error
        orjson.loads(error.body())


def as_sent(body: Any) -> bytes:
    """As a client could send it: integers of any size (orjson would refuse to write them)."""
    return json.dumps(body).encode()


CASES = [(endpoint, path) for endpoint, body in BASES.items() for path in paths(body)]


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(CASES), value=json_values)
def test_any_json_in_any_field_is_served_or_a_4xx(case: tuple[str, Any], value: Any) -> None:
    endpoint, path = case
    served(endpoint, as_sent(replaced(BASES[endpoint], path, value)))


@settings(max_examples=300, deadline=None)
@given(endpoint=st.sampled_from(sorted(BASES)), body=json_values)
def test_any_json_as_the_whole_body_is_a_4xx_or_served(endpoint: str, body: Any) -> None:
    served(endpoint, as_sent(body))


@settings(max_examples=300, deadline=None)
@given(endpoint=st.sampled_from(sorted(BASES)), raw=st.binary(max_size=64))
def test_any_bytes_as_the_body_are_a_4xx_or_served(endpoint: str, raw: bytes) -> None:
    served(endpoint, raw)


def test_nesting_deeper_than_a_node_could_be_sent_is_a_400() -> None:
    """orjson reads 1024 levels but writes only 254: a deep body passed through to an
    OpenAI-compatible node used to be a 500."""
    for endpoint, field in (("chat", "metadata"), ("completions", "user"), ("embeddings", "x")):
        start = orjson.dumps({**BASES[endpoint], field: None})[:-1].rsplit(b"null", 1)[0]
        for depth in (MAX_JSON_DEPTH + 1, 300, 1000):
            deep = (
                b'{"k":' * depth + b'"x"' + b"}" * depth
                if depth % 2
                else (b"[" * depth + b"1" + b"]" * depth)
            )
            error = refusal(endpoint, start + deep + b"}")
            assert error.status == 400 and "levels deep" in error.message
        served(endpoint, start + b"[" * (MAX_JSON_DEPTH - 2) + b"]" * (MAX_JSON_DEPTH - 2) + b"}")


def test_a_role_of_any_type_is_named_in_a_400() -> None:
    for role in ([], {}, ["user"], {"a": 1}, 1, None, "x" * 1000):
        body = replaced(BASES["chat"], ("messages", 1, "role"), role)
        error = refusal("chat", orjson.dumps(body))
        assert error.status == 400 and error.param == "messages[1].role"
        assert len(error.message) < 300


def refusal(endpoint: str, raw: bytes) -> GatewayError:
    try:
        prepare(endpoint, parse_body(raw), SNAPSHOT, Exchange(endpoint, key=KEY))
    except GatewayError as error:
        return error
    raise AssertionError("accepted")


def test_a_prompt_too_long_alone_does_not_speak_of_a_completion() -> None:
    long = "word " * 5000
    for endpoint, field in (("chat", "messages"), ("completions", "prompt")):
        body = {k: v for k, v in BASES[endpoint].items() if k != "max_tokens"}
        body[field] = [{"role": "user", "content": long}] if endpoint == "chat" else long
        error = refusal(endpoint, orjson.dumps(body))
        assert error.code == "context_length_exceeded"
        assert f"However, your {field} resulted in" in error.message
        assert "completion" not in error.message
