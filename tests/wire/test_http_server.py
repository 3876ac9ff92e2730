"""The HTTP/1.1 layer (`wire/http_server.py`) spoken byte for byte against a real
gateway process: framing, keep-alive, pipelining, chunked bodies, 100-continue, HEAD,
HTTP/1.0, upgrades (WebSocket handshakes handed to daphne off the data plane, declined on it,
other protocols declined everywhere), and what it answers itself: requests that do not parse
or that it does not serve, heads and bodies that stop arriving, heads over the limit."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httptools
import pytest

from tests.gateway.world import World, build
from tests.gateways import GatewayProcess
from tests.simulators import SimProcess

pytestmark = pytest.mark.slow  # real servers and processes

SIM = ("--api", "ollama", "--model", "qwen3:32b", "--zero-latency")
CHAT = json.dumps(
    {"model": "qwen3-32b", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}
).encode()


@dataclass
class Answer:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    raw: bytes = b""


class Conn:
    """A raw client connection. Answers are read by one real HTTP parser per connection, so
    answers that arrive together are told apart."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        self.parser = httptools.HttpResponseParser(self)
        self.answers: deque[Answer] = deque()
        self.current = Answer()
        self.unparsed = b""  # bytes held back from the parser (after a HEAD answer)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.current = Answer()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers[name.decode().lower()] = value.decode()

    def on_headers_complete(self) -> None:
        self.current.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.current.body += body

    def on_message_complete(self) -> None:
        self.answers.append(self.current)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> bytes:
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            raise AssertionError("no complete answer in 10 s") from None

    def read(self) -> Answer:
        """The next whole answer; its `raw` is every byte received while reading it."""
        received, self.unparsed = self.unparsed, b""
        if received:
            self.parser.feed_data(received)
        while not self.answers:
            data = self.recv()
            if not data:
                raise AssertionError(f"closed by the server mid-answer after {received!r}")
            received += data
            self.parser.feed_data(data)
        answer = self.answers.popleft()
        answer.raw = received
        return answer

    def read_until(self, end: bytes) -> bytes:
        """The bytes received up to and including `end`, not parsed as answers (a
        WebSocket's handshake and frames)."""
        data, self.unparsed = self.unparsed, b""
        while end not in data:
            chunk = self.recv()
            if not chunk:
                raise AssertionError(f"closed by the server after {data!r}")
            data += chunk
        cut = data.index(end) + len(end)
        data, self.unparsed = data[:cut], data[cut:]
        return data

    def read_exactly(self, size: int) -> bytes:
        data, self.unparsed = self.unparsed, b""
        while len(data) < size:
            chunk = self.recv()
            if not chunk:
                raise AssertionError(f"closed by the server after {data!r}")
            data += chunk
        data, self.unparsed = data[:size], data[size:]
        return data

    def read_head_only(self) -> Answer:
        """The answer to a HEAD request: a head and no body, whatever it declares."""
        data = self.unparsed
        while b"\r\n\r\n" not in data:
            data += self.recv()
        end = data.index(b"\r\n\r\n") + 4
        head, self.unparsed = data[:end], data[end:]
        status_line, *lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines if line)
        return Answer(int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()})

    def closed_by_server(self) -> bool:
        self.sock.settimeout(5)
        try:
            return self.unparsed == b"" and self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def conn(gateway: GatewayProcess) -> Iterator[Conn]:
    c = Conn(gateway)
    yield c
    c.close()


@pytest.fixture
def quick_idle_gateway(gateway: GatewayProcess) -> Iterator[GatewayProcess]:
    other = GatewayProcess({"CLAWDBOT_HTTP_IDLE_S": "1"})
    yield other
    other.stop()


def gateway_started_with(
    edit: Callable[[list[str]], list[str]], monkeypatch: pytest.MonkeyPatch
) -> GatewayProcess:
    """A gateway process started as the shared one is, but with its daphne command line
    edited."""
    popen = subprocess.Popen

    def edited(args: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        return popen(edit(args), **kwargs)  # type: ignore[call-overload, no-any-return]

    with monkeypatch.context() as patch:
        patch.setattr(subprocess, "Popen", edited)
        return GatewayProcess()


@pytest.fixture
def proxied_gateway(
    gateway: GatewayProcess, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GatewayProcess]:
    """A gateway that reads X-Forwarded-* headers, started as `clawdbot serve` starts it
    (daphne --proxy-headers)."""
    other = gateway_started_with(
        lambda args: [*args[:-1], "--proxy-headers", args[-1]], monkeypatch
    )
    yield other
    other.stop()


@pytest.fixture
def echo_gateway(
    gateway: GatewayProcess, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GatewayProcess]:
    """A gateway whose application also has a WebSocket consumer, an echo at /ws/echo
    (tests/wire/echo_asgi.py): the product has none yet."""
    other = gateway_started_with(
        lambda args: [*args[:-1], "tests.wire.echo_asgi:application"], monkeypatch
    )
    yield other
    other.stop()


@pytest.fixture
def world(gateway: GatewayProcess, simulator: Callable[..., SimProcess]) -> World:
    return build(gateway, {"gpu1": simulator(*SIM)})


def post(path: str, body: bytes, key: str, extra: bytes = b"") -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
        % (path.encode(), key.encode(), len(body), extra, body)
    )


def assert_openai_error(answer: Answer, status: int, code: str | None = None) -> None:
    """An answer in the gateway's error shape, with a request id, whoever gave it."""
    assert answer.status == status, answer.raw
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-request-id"].startswith("req-")
    error = json.loads(answer.body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code, error


def test_keep_alive_serves_many_requests_on_one_connection(conn: Conn) -> None:
    for _ in range(3):
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        answer = conn.read()
        assert answer.status == 200
        assert json.loads(answer.body) == {"status": "ok"}
        assert answer.headers["content-length"] == str(len(answer.body))
        assert "date" in answer.headers and answer.headers["server"] == "daphne"
        assert "connection" not in answer.headers


def test_pipelined_requests_are_answered_in_order(world: World, conn: Conn) -> None:
    conn.send(
        post("/v1/chat/completions", CHAT, world.key)
        + b"GET /v1/models/nope HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
        + world.key.encode()
        + b"\r\n\r\n"
        + b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    first, second, third = conn.read(), conn.read(), conn.read()
    assert first.status == 200 and json.loads(first.body)["object"] == "chat.completion"
    assert second.status == 404 and json.loads(second.body)["error"]["code"] == "model_not_found"
    assert third.status == 200 and json.loads(third.body) == {"status": "ok"}


def test_chunked_request_body_is_read_whole(world: World, conn: Conn) -> None:
    half = len(CHAT) // 2
    conn.send(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
        + world.key.encode()
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    conn.send(b"%x\r\n%s\r\n" % (half, CHAT[:half]))
    conn.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(CHAT) - half, CHAT[half:]))
    answer = conn.read()
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["choices"][0]["message"]["content"]


def test_streamed_answer_is_chunked_and_ends_with_the_last_chunk(world: World, conn: Conn) -> None:
    body = json.loads(CHAT)
    body["stream"] = True
    conn.send(post("/v1/chat/completions", json.dumps(body).encode(), world.key))
    answer = conn.read()
    assert answer.status == 200
    assert answer.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in answer.headers
    assert answer.raw.endswith(b"0\r\n\r\n")
    assert answer.body.endswith(b"data: [DONE]\n\n")
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")  # the connection is still usable
    assert conn.read().status == 200


def test_expect_100_continue_gets_an_interim_answer_first(world: World, conn: Conn) -> None:
    conn.send(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
        b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (world.key.encode(), len(CHAT))
    )
    interim = conn.read()
    assert interim.status == 100
    conn.send(CHAT)
    assert conn.read().status == 200


def test_head_gets_headers_without_a_body(conn: Conn) -> None:
    conn.send(b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    answer = conn.read_head_only()
    assert answer.status == 200
    assert answer.headers["content-length"] == str(len(b'{"status":"ok"}'))
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    follow = conn.read()
    assert follow.status == 200 and json.loads(follow.body) == {"status": "ok"}


def test_http_1_0_and_connection_close_end_the_connection(gateway: GatewayProcess) -> None:
    for request in (
        b"GET /healthz HTTP/1.0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    ):
        c = Conn(gateway)
        try:
            c.send(request)
            answer = c.read()
            assert answer.status == 200 and answer.headers["connection"] == "close"
            assert c.closed_by_server()
        finally:
            c.close()


def test_declared_body_over_the_limit_is_refused_and_the_connection_closed(
    world: World, conn: Conn
) -> None:
    conn.send(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
        b"Content-Length: 999999999\r\n\r\n{" % world.key.encode()
    )
    answer = conn.read()
    assert answer.status == 413
    assert json.loads(answer.body)["error"]["code"] == "request_too_large"
    assert answer.headers["connection"] == "close"
    # The client goes on sending its body, as clients do: the gateway reads and drops it
    # rather than close with unread bytes (a reset that can destroy the answer in flight).
    for _ in range(64):
        conn.send(b"x" * 16_384)
    assert conn.closed_by_server(), "the unread body must not be parsed as a next request"


CHUNKED_POST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
)


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost t\r\n\r\n", 400, "malformed_request"),  # no colon
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "malformed_request"),  # TLS
        (
            b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
            431,
            "headers_too_large",
        ),
        (b"BREW /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 400, "malformed_request"),
        (b"get /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 400, "malformed_request"),
        (b"GET /healthz HTTP/1.1\r\nHost: t\r\nX\x01Y: 1\r\n\r\n", 400, "malformed_request"),
        (b"GET /healthz HTTP/1.1\r\nHost : t\r\n\r\n", 400, "malformed_request"),
        (b"GET /heal\x00thz HTTP/1.1\r\nHost: t\r\n\r\n", 400, "malformed_request"),
        (b"GET /healthz HTTP/1.1\r\nHost: t\x00\r\n\r\n", 400, "malformed_request"),
        (b"GET /healthz HTTP/1.1\nHost: t\n\n", 400, "malformed_request"),  # bare LF
        (b"GET /healthz HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n", 400, "malformed_request"),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
            b"Content-Length: 2\r\n\r\n{}",
            400,
            "malformed_request",
        ),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 2, 2\r\n\r\n{}",
            400,
            "malformed_request",
        ),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n"
            b"Content-Length: 99999999999999999999999\r\n\r\n{}",
            400,
            "malformed_request",
        ),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n{}",
            400,
            "malformed_request",
        ),
        # Both framings at once: the way to smuggle a request past a proxy (RFC 9112 §6.3).
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            "malformed_request",
        ),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 5\r\n\r\n0\r\n\r\n",
            400,
            "malformed_request",
        ),
        (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414, "url_too_long"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "http_version_not_supported"),
        (b"GET /healthz HTTP/2.0\r\nHost: t\r\n\r\n", 505, "http_version_not_supported"),
        (b"GET /healthz\r\n\r\n", 505, "http_version_not_supported"),  # HTTP/0.9
        (
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            501,
            "not_implemented",
        ),
    ],
    ids=[
        "header-without-colon",
        "tls-hello",
        "head-too-large",
        "unknown-method",
        "lowercase-method",
        "control-byte-in-header-name",
        "space-before-colon",
        "nul-in-path",
        "nul-in-header-value",
        "bare-lf",
        "obsolete-line-folding",
        "duplicate-content-length",
        "content-length-list",
        "content-length-overflow",
        "negative-content-length",
        "content-length-and-chunked",
        "chunked-and-content-length",
        "url-too-long",
        "http2-preface",
        "http2-version",
        "http09",
        "connect",
    ],
)
def test_requests_the_http_layer_cannot_serve_get_an_openai_error_and_a_close(
    conn: Conn, request_bytes: bytes, status: int, code: str
) -> None:
    conn.send(request_bytes)
    answer = conn.read()
    assert_openai_error(answer, status, code)
    assert answer.headers["connection"] == "close"
    assert conn.closed_by_server()


@pytest.mark.parametrize(
    "request_bytes",
    [
        CHUNKED_POST + b"zz\r\n",  # not a chunk size
        CHUNKED_POST + b"ffffffffffffffffff\r\n",  # a chunk size past 64 bits
        CHUNKED_POST + b"1\r\nxy\r\n",  # more data than the chunk size said
        # A transfer coding without chunked last: the body's length cannot be known (RFC 9112
        # §6.3), whether or not the method usually has one.
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
    ],
    ids=["bad-chunk-size", "chunk-size-overflow", "chunk-overrun", "te-identity", "te-gzip-get"],
)
def test_a_body_that_breaks_off_is_a_400_not_a_hang(conn: Conn, request_bytes: bytes) -> None:
    # The request's head was fine, so its application was started and is reading the body:
    # it must be told the rest will never come, and the client answered.
    conn.send(request_bytes)
    answer = conn.read()
    assert_openai_error(answer, 400, "malformed_request")
    assert conn.closed_by_server()


def test_a_broken_body_behind_a_good_request_is_answered_after_it(conn: Conn) -> None:
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n" + CHUNKED_POST + b"zz\r\n")
    first, second = conn.read(), conn.read()
    assert first.status == 200 and json.loads(first.body) == {"status": "ok"}
    assert_openai_error(second, 400, "malformed_request")
    assert conn.closed_by_server()


def test_a_head_far_over_the_limit_is_answered_and_read_before_the_close(conn: Conn) -> None:
    # The client is still sending when the 431 goes out. Closing with its bytes unread makes
    # a reset, which fails the client's next send (most clients then report a broken
    # connection, not the answer) and can destroy the answer in flight: as for a 413, the
    # gateway ends its side and reads and drops what still comes.
    pad = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + pad * 300)  # about 300 KB
    answer = conn.read()
    assert_openai_error(answer, 431, "headers_too_large")
    assert answer.headers["connection"] == "close"
    for _ in range(64):
        conn.send(pad * 16)
    assert conn.closed_by_server()


def test_non_ascii_path_is_a_400(conn: Conn) -> None:
    conn.send(b"GET /v1/mod\xc3\xa9ls HTTP/1.1\r\nHost: t\r\n\r\n")
    assert_openai_error(conn.read(), 400, "malformed_request")


@pytest.mark.parametrize(
    "path",
    [
        b"/static/../../../etc/passwd",
        b"/static/..%2f..%2f..%2fetc/passwd",
        b"/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        b"/static/admin/../../../../etc/passwd",
    ],
    ids=["dots", "encoded-slashes", "encoded-dots", "below-an-app"],
)
def test_a_static_path_out_of_the_static_roots_is_a_400(conn: Conn, path: bytes) -> None:
    conn.send(b"GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path)
    answer = conn.read()
    assert answer.status == 400, answer.raw
    assert b"root:" not in answer.body


def test_forwarded_headers_that_are_not_ascii_are_ignored(proxied_gateway: GatewayProcess) -> None:
    c = Conn(proxied_gateway)
    try:
        for fields in (
            b"X-Forwarded-For: \xff\xfe\r\n",
            b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: \xff\r\n",
            b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Port: \xe9\r\n",
        ):
            c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n%s\r\n" % fields)
            answer = c.read()
            assert answer.status == 200 and json.loads(answer.body) == {"status": "ok"}
    finally:
        c.close()


WEBSOCKET = (
    b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)
# What the server must answer to that key (RFC 6455 §1.3).
WEBSOCKET_ACCEPT = base64.b64encode(
    hashlib.sha1(b"dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
)
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"


def handshake(target: bytes, extra: bytes = b"") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: localhost\r\n%s%s\r\n" % (target, WEBSOCKET, extra)


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A whole, short, masked frame, as a client must send it (RFC 6455 §5.2)."""
    mask = b"\x0f\xa1\x5c\x33"
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def server_frame(conn: Conn) -> tuple[int, bytes]:
    """The next frame from the server: whole, short and unmasked, as it must send it."""
    first, second = conn.read_exactly(2)
    assert first & 0x80 and second < 126, (first, second)
    return first & 0x0F, conn.read_exactly(second)


def test_a_websocket_upgrade_on_the_data_plane_is_declined_and_answered_as_http(
    conn: Conn,
) -> None:
    # The data plane speaks HTTP only: the handshake gets the HTTP answer to its request, in
    # the OpenAI shape on /v1, and the connection stays HTTP.
    conn.send(b"GET /v1/realtime HTTP/1.1\r\nHost: t\r\n" + WEBSOCKET + b"\r\n")
    assert_openai_error(conn.read(), 404, "not_found")
    conn.send(b"GET /v1/chat/completions HTTP/1.1\r\nHost: t\r\n" + WEBSOCKET + b"\r\n")
    assert_openai_error(conn.read(), 405)
    conn.send(b"GET /v1/models/ HTTP/1.1\r\nHost: t\r\n" + WEBSOCKET + b"\r\n")
    assert_openai_error(conn.read(), 401)
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert conn.read().status == 200


@pytest.mark.parametrize(
    "target",
    [b"/ws/test", b"/ws/test?token=abc", b"/v1/admin/events", b"/ws/t%C3%A9st"],
    ids=["console", "with-query", "management-api", "escaped"],
)
def test_a_websocket_handshake_off_the_data_plane_goes_to_daphnes_websocket_protocol(
    conn: Conn, target: bytes
) -> None:
    # No consumer exists yet: the application closes the handshake, which daphne's WebSocket
    # protocol answers 403 and closes; served as HTTP, it would be a 404 from Django.
    conn.send(handshake(target))
    assert conn.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 403 ")
    assert conn.closed_by_server()


def test_a_websocket_handshake_behind_a_request_waits_for_its_answer(conn: Conn) -> None:
    conn.send(HEALTHZ + handshake(b"/ws/test"))
    answer = conn.read_until(b'{"status":"ok"}')
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert conn.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 403 ")
    assert conn.closed_by_server()


def test_a_websocket_handed_to_daphne_is_served_to_its_close(echo_gateway: GatewayProcess) -> None:
    c = Conn(echo_gateway)
    try:
        # Behind a request, so the connection is paused while that one is answered, and must
        # be read again once daphne has it.
        c.send(HEALTHZ + handshake(b"/ws/echo"))
        assert c.read_until(b'{"status":"ok"}').startswith(b"HTTP/1.1 200 OK\r\n")
        head = c.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert b"\r\nSec-WebSocket-Accept: " + WEBSOCKET_ACCEPT + b"\r\n" in head
        c.send(client_frame(0x1, b"hello"))
        assert server_frame(c) == (0x1, b"hello")
        c.send(client_frame(0x2, b"\x00\xff"))
        assert server_frame(c) == (0x2, b"\x00\xff")
        c.send(client_frame(0x8, (1000).to_bytes(2, "big")))
        opcode, payload = server_frame(c)
        assert opcode == 0x8 and payload[:2] == (1000).to_bytes(2, "big")
        assert c.closed_by_server()
    finally:
        c.close()


@pytest.mark.parametrize(
    "field",
    [b"X-Forwarded-For: \xff\xfe\r\n", b"Sec-WebSocket-Protocol: \xff\r\n"],
    ids=["forwarded-for", "subprotocol"],
)
def test_a_handshake_value_daphne_cannot_decode_is_treated_as_absent(
    proxied_gateway: GatewayProcess, field: bytes
) -> None:
    # Daphne decodes these strictly and answers a 500 when it cannot.
    c = Conn(proxied_gateway)
    try:
        c.send(handshake(b"/ws/test", field))
        assert c.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 403 ")
    finally:
        c.close()


def test_an_upgrade_request_with_a_body_is_served_with_its_body(world: World, conn: Conn) -> None:
    conn.send(post("/v1/chat/completions", CHAT, world.key, WEBSOCKET))
    answer = conn.read()
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["object"] == "chat.completion"


def test_an_upgrade_request_body_is_never_read_as_a_next_request(conn: Conn) -> None:
    # Were the body taken for the next request, it would be answered (a 401 for /v1/models
    # without a key) before the request that really follows.
    smuggled = b"GET /v1/models HTTP/1.1\r\nHost: t\r\n\r\n"
    conn.send(
        b"POST /healthz HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
        b"Content-Length: %d\r\n\r\n%s"
        % (len(smuggled), smuggled)
        + b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    first, second = conn.read(), conn.read()
    assert first.status == 200 and second.status == 200
    assert json.loads(second.body) == {"status": "ok"}


@pytest.mark.parametrize(
    ("target", "status"), [(b"/healthz", 200), (b"/ws/test", 404)], ids=["data-plane", "elsewhere"]
)
def test_an_h2c_upgrade_is_declined_and_the_connection_stays_http(
    conn: Conn, target: bytes, status: int
) -> None:
    conn.send(
        b"GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n" % target
    )
    answer = conn.read()
    assert answer.status == status
    assert b"\r\ndate: " in answer.raw, "answered by this layer (twisted's capitalises names)"
    conn.send(HEALTHZ)
    assert conn.read().status == 200


def test_many_pipelined_upgrade_requests_are_answered_in_order(conn: Conn) -> None:
    upgrade = b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + WEBSOCKET + b"\r\n"
    conn.send(upgrade * 300 + b"GET /v1/nope HTTP/1.1\r\nHost: t\r\n\r\n")
    answers = [conn.read() for _ in range(301)]
    assert {a.status for a in answers[:300]} == {200}
    assert_openai_error(answers[300], 404, "not_found")


def test_many_pipelined_requests_answered_at_once_do_not_recurse(conn: Conn) -> None:
    # Each of these is refused as it starts (a header byte daphne does not allow); answering
    # them one inside the other would overflow the stack long before 300.
    bad = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Odd: \x85\r\n\r\n"
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n" + bad * 300)
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    answers = [conn.read() for _ in range(302)]
    assert answers[0].status == 200
    assert {a.status for a in answers[1:301]} == {400}
    assert_openai_error(answers[1], 400, "invalid_header")
    assert answers[301].status == 200 and json.loads(answers[301].body) == {"status": "ok"}


def test_a_bad_request_behind_a_good_one_waits_for_its_answer(world: World, conn: Conn) -> None:
    body = json.loads(CHAT)
    body["stream"] = True
    conn.send(
        post("/v1/chat/completions", json.dumps(body).encode(), world.key)
        + b"GET /healthz HTTP/1.1\r\nHost t\r\n\r\n"
    )
    streamed, refused = conn.read(), conn.read()
    assert streamed.status == 200 and streamed.body.endswith(b"data: [DONE]\n\n")
    assert_openai_error(refused, 400, "malformed_request")
    assert refused.headers["connection"] == "close"
    assert conn.closed_by_server()


def test_a_header_value_that_never_ends_is_cut_off(conn: Conn) -> None:
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Endless: ")
    for _ in range(40):  # 40 x 8 KiB, no end of line
        try:
            conn.send(b"a" * 8192)
        except (BrokenPipeError, ConnectionResetError):
            break  # closed already, as it should be
    assert_openai_error(conn.read(), 431, "headers_too_large")


def test_an_idle_connection_is_closed_after_the_idle_timeout(
    quick_idle_gateway: GatewayProcess,
) -> None:
    c = Conn(quick_idle_gateway)
    try:
        c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert c.read().status == 200
        answered = time.monotonic()
        assert c.closed_by_server()
        idle = time.monotonic() - answered
        assert 0.9 <= idle < 4, f"closed after {idle:.2f} s idle; CLAWDBOT_HTTP_IDLE_S is 1"
    finally:
        c.close()


def test_a_head_that_stops_arriving_gets_a_408(quick_idle_gateway: GatewayProcess) -> None:
    c = Conn(quick_idle_gateway)
    try:
        c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")  # slowloris: never ends
        answer = c.read()
        assert_openai_error(answer, 408, "request_timeout")
        assert answer.headers["connection"] == "close"
        assert c.closed_by_server()
    finally:
        c.close()


def test_a_body_that_stops_arriving_gets_a_408(quick_idle_gateway: GatewayProcess) -> None:
    c = Conn(quick_idle_gateway)
    try:
        c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{")
        started = time.monotonic()
        answer = c.read()
        assert_openai_error(answer, 408, "request_timeout")
        waited = time.monotonic() - started
        assert 0.9 <= waited < 4, f"answered after {waited:.2f} s; CLAWDBOT_HTTP_IDLE_S is 1"
        assert c.closed_by_server()
    finally:
        c.close()
