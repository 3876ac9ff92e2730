"""The HTTP/1.1 layer (`wire/http_server.py`) spoken byte for byte against a real
gateway process: framing, keep-alive, pipelining, chunked bodies, 100-continue, HEAD,
HTTP/1.0, bad requests, and the hand-over of upgrade requests to daphne's own channel."""

from __future__ import annotations

import json
import socket
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


@pytest.fixture
def world(gateway: GatewayProcess, simulator: Callable[..., SimProcess]) -> World:
    return build(gateway, {"gpu1": simulator(*SIM)})


def post(path: str, body: bytes, key: str, extra: bytes = b"") -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
        % (path.encode(), key.encode(), len(body), extra, body)
    )


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
    # The client goes on sending its body, as clients do: the gateway reads and drops it
    # rather than close with unread bytes (a reset that can destroy the answer in flight).
    for _ in range(64):
        conn.send(b"x" * 16_384)
    assert conn.closed_by_server(), "the unread body must not be parsed as a next request"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost t\r\n\r\n", 400),  # header without a colon
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # TLS to a plain port
        (b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
    ],
    ids=["malformed-header", "tls-hello", "head-too-large"],
)
def test_unparseable_requests_get_an_error_and_a_close(
    conn: Conn, request_bytes: bytes, status: int
) -> None:
    conn.send(request_bytes)
    answer = conn.read()
    assert answer.status == status
    assert answer.headers["connection"] == "close"
    assert conn.closed_by_server()


def test_non_ascii_path_is_a_400(conn: Conn) -> None:
    conn.send(b"GET /v1/mod\xc3\xa9ls HTTP/1.1\r\nHost: t\r\n\r\n")
    assert conn.read().status == 400


def test_upgrade_requests_are_handed_to_daphnes_own_channel(conn: Conn) -> None:
    # h2c is an upgrade that twisted declines: it answers the request as HTTP/1.1, through
    # daphne's twisted channel, which shows in how it writes the header names.
    conn.send(
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"
    )
    answer = conn.read()
    assert answer.status == 200
    assert json.loads(answer.body) == {"status": "ok"}
    assert b"\r\nContent-Type: " in answer.raw, "twisted capitalises header names"
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert conn.read().status == 200, "the connection stays with twisted and keeps working"


def test_many_pipelined_requests_answered_at_once_do_not_recurse(conn: Conn) -> None:
    # Each of these is refused as it starts (a header byte daphne does not allow); answering
    # them one inside the other would overflow the stack long before 300.
    bad = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Odd: \x85\r\n\r\n"
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n" + bad * 300)
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    answers = [conn.read() for _ in range(302)]
    assert answers[0].status == 200
    assert {a.status for a in answers[1:301]} == {400}
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
    assert refused.status == 400 and refused.headers["connection"] == "close"
    assert conn.closed_by_server()


def test_a_header_value_that_never_ends_is_cut_off(conn: Conn) -> None:
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Endless: ")
    for _ in range(40):  # 40 x 8 KiB, no end of line
        try:
            conn.send(b"a" * 8192)
        except (BrokenPipeError, ConnectionResetError):
            break  # closed already, as it should be
    answer = conn.read()
    assert answer.status == 431


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
