"""A real gateway process under generated abuse (Hypothesis): bodies with any JSON in any
field, arbitrary header names and values, and raw bytes where an HTTP request should be.
Whatever arrives: no 5xx, every error in the OpenAI shape with an x-request-id, an answer or
a close within a bounded time, and afterwards the gateway healthy and its request log
still flowing. tests/gateway/test_fuzz_requests.py covers the same bodies in process, with
many more cases."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import tasks
from gateway.models import RequestLog
from tests.gateway.test_fuzz_requests import BASES, CASES, json_values, replaced
from tests.gateway.world import HELLO, World, build
from tests.gateways import GatewayProcess
from tests.simulators import simulators

pytestmark = pytest.mark.slow  # real servers and processes

ANSWER_S = 10.0  # no request may go unanswered (or unclosed) longer than this
FAST = ("--api", "ollama", "--model", "qwen3:32b", "--zero-latency")
PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,  # the same cases every run: a failure here is reproducible
)


@pytest.fixture(scope="module")
def world(django_db_setup: None, django_db_blocker: Any) -> Iterator[World]:
    gateway = GatewayProcess()
    with simulators() as start:
        with django_db_blocker.unblock():
            world = build(gateway, {"gpu1": start(*FAST)})
        yield world
    gateway.stop()


@pytest.fixture(scope="module")
def http(world: World) -> Iterator[httpx.Client]:
    with httpx.Client(headers=world.headers(), timeout=ANSWER_S) as client:
        yield client


# 501 and 505 are the request's own fault, as RFC 9110 has them: a method or an HTTP version
# this server does not speak. Only raw bytes can ask for those.
NOT_SPOKEN = (501, 505)


def assert_answered_well(
    status: int, headers: Any, body: bytes, also: tuple[int, ...] = ()
) -> None:
    assert status < 500 or status in also, (status, body[:300])
    assert headers.get("x-request-id", "").startswith("req-"), (status, dict(headers))
    if status >= 400:
        error = orjson.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str) and error["message"]


@settings(FUZZ, max_examples=1500)
@given(case=st.sampled_from(CASES), value=json_values, stream=st.booleans())
def test_any_json_in_any_field(
    http: httpx.Client, world: World, case: tuple[str, Any], value: Any, stream: bool
) -> None:
    endpoint, path = case
    body = replaced(BASES[endpoint], path, value)
    if endpoint != "embeddings" and path[0] not in ("stream", "stream_options"):
        body["stream"] = stream
        if not stream:
            body.pop("stream_options", None)
    raw = json.dumps(body).encode()
    with http.stream("POST", world.base_url + PATHS[endpoint], content=raw) as response:
        content = response.read()
    assert_answered_well(response.status_code, response.headers, content)
    if response.status_code == 200 and response.headers["content-type"].startswith(
        "text/event-stream"
    ):
        events = [line for line in content.split(b"\n") if line.startswith(b"data: ")]
        assert events and events[-1] == b"data: [DONE]", content[-300:]


# Header names as a client could send them (tokens, and a few bytes that are not), and the
# ones the HTTP layer or the gateway reads.
header_names = st.one_of(
    st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
        min_size=1,
        max_size=20,
    ),
    st.sampled_from(
        [
            "x-forwarded-for",
            "x-forwarded-proto",
            "content-length",
            "transfer-encoding",
            "expect",
            "connection",
            "upgrade",
            "host",
            "authorization",
            "content-type",
            "accept-encoding",
        ]
    ),
)
header_values = st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


def raw_exchange(world: World, request: bytes, *, half_close: bool = False) -> bytes:
    """Send raw bytes; return whatever comes back before the gateway closes or goes quiet.
    Goes quiet for longer than ANSWER_S: a hang, which fails the test. `half_close` tells
    the gateway nothing more will come (what a request declares but never sends)."""
    port = int(world.gateway.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_S) as sock:
        try:
            sock.sendall(request)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # closed on us already: what it said before is read below
        received = b""
        deadline = time.monotonic() + ANSWER_S
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no answer and no close: {request[:200]!r}") from None
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return received


def parsed(received: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
    if headers.get("transfer-encoding") == "chunked":
        size, _, rest = body.partition(b"\r\n")
        body = rest[: int(size, 16)]
    return status, headers, body


@settings(FUZZ, max_examples=600)
@given(extra=st.lists(st.tuples(header_names, header_values), max_size=6))
def test_any_headers(world: World, extra: list[tuple[str, bytes]]) -> None:
    body = orjson.dumps({"model": "qwen3-32b", "messages": HELLO, "max_tokens": 2})
    lines = [
        b"POST /v1/chat/completions HTTP/1.1",
        b"host: 127.0.0.1",
        b"authorization: Bearer " + world.key.encode(),
        b"content-type: application/json",
        *(name.encode() + b": " + value for name, value in extra),
        b"content-length: %d" % len(body),
        b"connection: close",
    ]
    received = raw_exchange(world, b"\r\n".join(lines) + b"\r\n\r\n" + body)
    assert received, "closed without an answer"
    status, headers, content = parsed(received)
    assert_answered_well(status, headers, content)


request_lines = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda method, target, version: method + b" " + target + b" " + version,
        st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"G\x00T"]),
        st.binary(min_size=1, max_size=60).map(lambda b: b"/" + b.replace(b" ", b"%20")),
        st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/9", b"", b"http/1.1"]),
    ),
)


@settings(FUZZ, max_examples=600)
@given(line=request_lines, tail=st.binary(max_size=100))
def test_any_bytes_where_a_request_should_be(world: World, line: bytes, tail: bytes) -> None:
    request = line + b"\r\nhost: x\r\n" + tail + b"\r\n\r\n"
    received = raw_exchange(world, request, half_close=True)
    if received:  # closing without a word is allowed for what is not HTTP at all
        status, headers, content = parsed(received)
        assert status < 500 or status in NOT_SPOKEN, received[:300]
        if status >= 400 and headers.get("content-type", "").startswith("application/json"):
            assert_answered_well(status, headers, content, NOT_SPOKEN)


@pytest.mark.django_db(transaction=True)
def test_the_gateway_is_healthy_and_logging_afterwards(world: World, http: httpx.Client) -> None:
    """Last in this module (pytest keeps file order): whatever the cases above did."""
    assert httpx.get(world.gateway.url + "/healthz", timeout=5).status_code == 200
    answer = http.post(
        world.base_url + "/chat/completions",
        json={"model": "qwen3-32b", "messages": HELLO, "max_tokens": 3},
    )
    assert answer.status_code == 200, answer.text
    request_id = answer.headers["x-request-id"]
    deadline = time.monotonic() + ANSWER_S
    while time.monotonic() < deadline:
        tasks.flush_request_logs()
        if RequestLog.objects.filter(request_id=request_id).exists():
            break
        time.sleep(0.05)  # bounded poll: the entry is buffered just after the answer
    assert RequestLog.objects.filter(request_id=request_id).exists()
    assert not RequestLog.objects.filter(status__gte=500).exists()
