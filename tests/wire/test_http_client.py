"""The data plane's upstream client against real sockets: scripted HTTP servers on loopback
whose every byte the test chooses, so the edge cases (a pooled connection the node closed, an
answer cut short, a silent node) happen for real."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.gateways import free_port
from wire.http_client import (
    HIGH_WATER,
    UpstreamClient,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamTimeout,
    parse_origin,
)

pytestmark = pytest.mark.slow  # real servers and processes

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ScriptedServer:
    """Counts connections and requests; `handler` answers each request on a connection."""

    def __init__(
        self, handler: Callable[[ScriptedServer, bytes, asyncio.StreamWriter], Awaitable[bool]]
    ):
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.readers: list[asyncio.StreamReader] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        self.readers.append(reader)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                if not await self.handler(self, request, writer):
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[ScriptedServer]]]:
    servers: list[ScriptedServer] = []

    async def start(handler: Callable[..., Awaitable[bool]]) -> ScriptedServer:
        scripted = ScriptedServer(handler)
        scripted.server = await asyncio.start_server(scripted.serve, "127.0.0.1", 0)
        servers.append(scripted)
        return scripted

    yield start
    for scripted in servers:
        for writer in scripted.writers:
            writer.close()
        assert scripted.server is not None
        scripted.server.close()


def answer(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    return head + b"".join(extra) + b"content-length: %d\r\n\r\n" % len(body) + body


async def ok(server: ScriptedServer, request: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(answer(b'{"n":%d}' % len(server.requests)))
    await writer.drain()
    return True


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    http = UpstreamClient(connect_s=2, read_s=2)
    yield http
    await http.aclose()


def test_origin_keeps_a_path_prefix_and_default_ports() -> None:
    origin = parse_origin("https://gpu1.example/ollama/")
    assert (origin.host, origin.port, origin.tls, origin.prefix) == (
        "gpu1.example",
        443,
        True,
        b"/ollama",
    )
    assert parse_origin("http://10.0.0.7:11434").host_header == b"10.0.0.7:11434"
    assert parse_origin("http://gpu2").port == 80


async def test_sends_the_body_and_reuses_one_connection(serve, client) -> None:
    server = await serve(ok)
    for n in (1, 2, 3):
        response = await client.post(server.url, "/api/chat", b'{"q":1}')
        assert response.status == 200
        assert await response.read() == b'{"n":%d}' % n
        response.close()
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /api/chat HTTP/1.1\r\n")
    assert b"content-type: application/json\r\n" in first
    assert first.endswith(b'\r\n\r\n{"q":1}')


async def test_path_prefix_is_sent(serve, client) -> None:
    server = await serve(ok)
    response = await client.post(server.url + "/ollama", "/api/chat", b"{}")
    await response.read()
    response.close()
    assert server.requests[0].startswith(b"POST /ollama/api/chat HTTP/1.1\r\n")


async def test_a_pooled_connection_closed_by_the_node_is_replaced_silently(serve, client) -> None:
    async def once_then_close(server, request, writer) -> bool:
        writer.write(answer(b"{}"))
        await writer.drain()
        return False  # close after answering, without saying Connection: close

    server = await serve(once_then_close)
    first = await client.post(server.url, "/x", b"{}")
    await first.read()
    first.close()
    # Wait (bounded) until the close has reached the client, as an idle pool would see it.
    for _ in range(200):
        if not client._idle.get(server.url):
            break
        await asyncio.sleep(0.005)
    second = await client.post(server.url, "/x", b"{}")
    assert await second.read() == b"{}"
    second.close()
    assert server.connections == 2


async def test_a_stale_connection_racing_the_request_is_retried_once(serve, client) -> None:
    """The node closes the pooled connection just as the request is written: no answer byte
    arrived, so the client sends it again on a new connection."""

    async def handler(server, request, writer) -> bool:
        if len(server.requests) == 1:
            writer.write(answer(b"{}"))
            await writer.drain()
            return True
        if len(server.requests) == 2:
            return False  # drop the connection without answering
        writer.write(answer(b'{"again":true}'))
        await writer.drain()
        return True

    server = await serve(handler)
    first = await client.post(server.url, "/x", b"{}")
    await first.read()
    first.close()
    second = await client.post(server.url, "/x", b"{}")
    assert await second.read() == b'{"again":true}'
    second.close()
    assert server.connections == 2
    assert len(server.requests) == 3


async def test_a_fresh_connection_dropped_without_an_answer_is_an_error(serve, client) -> None:
    async def drop(server, request, writer) -> bool:
        return False

    server = await serve(drop)
    with pytest.raises(UpstreamDisconnected):
        await client.post(server.url, "/x", b"{}")
    assert server.connections == 1


async def test_an_answer_cut_short_is_an_error_and_the_connection_is_not_pooled(
    serve, client
) -> None:
    async def half(server, request, writer) -> bool:
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"partial"')
        await writer.drain()
        return False

    server = await serve(half)
    response = await client.post(server.url, "/x", b"{}")
    with pytest.raises(UpstreamDisconnected):
        await response.read()
    response.close()
    assert not client._idle.get(server.url)


async def test_chunked_stream_arrives_in_pieces(serve, client) -> None:
    step = asyncio.Event()

    async def chunked(server, request, writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"6\r\nline1\n\r\n")
        await writer.drain()
        await step.wait()
        writer.write(b"6\r\nline2\n\r\n0\r\n\r\n")
        await writer.drain()
        return True

    server = await serve(chunked)
    response = await client.post(server.url, "/x", b"{}")
    pieces = [await response.__anext__()]
    step.set()
    pieces += [piece async for piece in response]
    response.close()
    assert pieces == [b"line1\n", b"line2\n"]
    assert client._idle[server.url]  # complete and keep-alive: pooled


async def test_an_answer_ended_by_closing_the_connection_is_complete(serve, client) -> None:
    async def eof_delimited(server, request, writer) -> bool:
        writer.write(b'HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{"whole":true}')
        await writer.drain()
        return False

    server = await serve(eof_delimited)
    response = await client.post(server.url, "/x", b"{}")
    assert await response.read() == b'{"whole":true}'
    response.close()
    assert not client._idle.get(server.url)


async def test_error_statuses_are_answers_not_exceptions(serve, client) -> None:
    async def busy(server, request, writer) -> bool:
        body = b'{"error":"server busy"}'
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: %d\r\n\r\n" % len(body))
        writer.write(body)
        await writer.drain()
        return True

    server = await serve(busy)
    response = await client.post(server.url, "/x", b"{}")
    assert response.status == 503
    assert await response.read() == b'{"error":"server busy"}'
    response.close()


async def test_refused_connection() -> None:
    http = UpstreamClient(connect_s=2, read_s=2)
    with pytest.raises(UpstreamConnectError):
        await http.post(f"http://127.0.0.1:{free_port()}", "/x", b"{}")


async def test_a_silent_node_times_out_and_is_dropped(serve) -> None:
    async def silent(server, request, writer) -> bool:
        await asyncio.Event().wait()  # until the test tears the server down
        return False

    server = await serve(silent)
    http = UpstreamClient(connect_s=2, read_s=0.2)
    with pytest.raises(UpstreamTimeout):
        await http.post(server.url, "/x", b"{}")
    assert not http._idle.get(server.url)


async def test_a_node_that_stalls_mid_stream_times_out(serve) -> None:
    async def stall(server, request, writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nab\n\r\n")
        await writer.drain()
        await asyncio.Event().wait()
        return False

    server = await serve(stall)
    http = UpstreamClient(connect_s=2, read_s=0.2)
    response = await http.post(server.url, "/x", b"{}")
    assert await response.__anext__() == b"ab\n"
    with pytest.raises(UpstreamTimeout):
        await response.__anext__()
    response.close()


async def test_malformed_http_is_an_upstream_error(serve, client) -> None:
    async def garbage(server, request, writer) -> bool:
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        return True

    server = await serve(garbage)
    with pytest.raises(UpstreamError, match="malformed HTTP"):
        await client.post(server.url, "/x", b"{}")


async def test_a_slow_reader_pauses_the_node_instead_of_buffering(serve, client) -> None:
    """Past HIGH_WATER unread bytes the client stops reading; the rest waits at the node."""
    piece = b"x" * 65536
    pieces = (64 * HIGH_WATER) // len(piece)  # far more than loopback's socket buffers

    async def flood(server, request, writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (pieces * len(piece)))
        for _ in range(pieces):
            writer.write(piece)
        await writer.drain()
        return True

    server = await serve(flood)
    response = await client.post(server.url, "/x", b"{}")
    for _ in range(400):
        if response._paused:
            break
        await asyncio.sleep(0.005)
    assert response._paused
    for _ in range(20):  # give the node every chance to push more; nothing may arrive
        await asyncio.sleep(0.005)
    assert response._buffered <= HIGH_WATER + len(piece) * 4
    assert server.writers[0].transport.get_write_buffer_size() > 0
    total = 0
    async for data in response:
        total += len(data)
    response.close()
    assert total == pieces * len(piece)


async def test_cancelling_a_request_drops_its_connection(serve, client) -> None:
    async def silent(server, request, writer) -> bool:
        await asyncio.Event().wait()
        return False

    server = await serve(silent)
    task = asyncio.ensure_future(client.post(server.url, "/x", b"{}"))
    for _ in range(200):
        if server.requests:
            break
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not client._idle.get(server.url)
    # The node sees its connection closed (an Ollama runner stops generating).
    reader = server.readers[0]
    for _ in range(200):
        if reader.at_eof():
            break
        await asyncio.sleep(0.005)
    assert reader.at_eof()


async def test_the_first_byte_has_its_own_deadline_and_idle_calls_meanwhile(serve) -> None:
    release = asyncio.Event()

    async def slow_prefill(server, request, writer) -> bool:
        await release.wait()
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nab\n\r\n")
        await writer.drain()
        await asyncio.Event().wait()  # then stalls mid-answer
        return False

    server = await serve(slow_prefill)
    # Waiting for the status line may take longer than the read limit allows between chunks.
    http = UpstreamClient(connect_s=2, read_s=0.2, first_byte_s=5)
    idle_calls = 0

    async def on_idle() -> None:
        nonlocal idle_calls
        idle_calls += 1
        if idle_calls == 4:  # 4 x 0.1 s: past the 0.2 s read limit, still waiting
            release.set()

    response = await http.post(server.url, "/x", b"{}", 0.1, on_idle)
    assert idle_calls == 4 and response.status == 200
    assert await response.__anext__() == b"ab\n"
    with pytest.raises(UpstreamTimeout):  # after the headers, the read limit applies
        await response.__anext__()
    response.close()


async def test_no_status_line_within_the_first_byte_limit_is_a_timeout(serve) -> None:
    async def silent(server, request, writer) -> bool:
        await asyncio.Event().wait()
        return False

    server = await serve(silent)
    http = UpstreamClient(connect_s=2, read_s=30, first_byte_s=0.2)
    with pytest.raises(UpstreamTimeout, match="first-byte"):
        await http.post(server.url, "/x", b"{}")


async def test_the_first_byte_limit_covers_a_body_that_starts_late(serve) -> None:
    # vLLM sends its status line at once and its first event after the prefill: that wait is
    # the first byte's too, and only then the read limit applies.
    release = asyncio.Event()

    async def headers_first(server, request, writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"3\r\nab\n\r\n")
        await writer.drain()
        await asyncio.Event().wait()
        return False

    server = await serve(headers_first)
    http = UpstreamClient(connect_s=2, read_s=0.2, first_byte_s=5)
    response = await http.post(server.url, "/x", b"{}")
    asyncio.get_running_loop().call_later(0.5, release.set)  # a prefill past the read limit
    assert await response.__anext__() == b"ab\n"
    with pytest.raises(UpstreamTimeout, match=r"for 0\.2 s"):
        await response.__anext__()
    response.close()


async def test_a_pooled_connection_dropped_late_is_not_sent_again(serve) -> None:
    """No answer byte, but the node had the request for a while (a crash mid-prefill): sent
    again it would run twice on the same node, so it is an error for the proxy to handle."""
    dropped = asyncio.Event()

    async def handler(server, request, writer) -> bool:
        if len(server.requests) == 1:
            writer.write(answer(b"{}"))
            await writer.drain()
            return True
        await asyncio.sleep(0.3)  # the node works on it, then dies
        dropped.set()
        return False

    server = await serve(handler)
    http = UpstreamClient(connect_s=2, read_s=5, stale_resend_s=0.1)
    first = await http.post(server.url, "/x", b"{}")
    await first.read()
    first.close()
    with pytest.raises(UpstreamDisconnected):
        await http.post(server.url, "/x", b"{}")
    assert dropped.is_set() and len(server.requests) == 2


# --- idle connections are not trusted forever ---


async def test_a_connection_idle_too_long_is_closed_not_reused(serve) -> None:
    server = await serve(ok)
    http = UpstreamClient(connect_s=2, read_s=2, max_idle_s=0.05)
    try:
        (await http.post(server.url, "/x", b"{}")).close()
        (await http.post(server.url, "/x", b"{}")).close()
        assert server.connections == 1  # back to back: reused
        (idle,) = http._idle[server.url]
        idle.idle_since -= 1.0  # as if it had sat idle for a second
        (await http.post(server.url, "/x", b"{}")).close()
        assert server.connections == 2 and idle.closed
    finally:
        await http.aclose()


async def test_a_timeout_takes_the_node_s_idle_connections_with_it(serve) -> None:
    """A node that stopped answering on its old connections while new ones work (a NAT
    that dropped them, a backend half hung): one request pays the timeout, not every
    request that picks an old connection from the pool."""
    hung = asyncio.Event()

    async def old_ones_hang(server, request, writer) -> bool:
        if hung.is_set() and writer in server.writers[:2]:
            await asyncio.Event().wait()  # until the test tears the server down
        await asyncio.sleep(0.05)  # both first requests in flight at once: two connections
        return await ok(server, request, writer)

    server = await serve(old_ones_hang)
    http = UpstreamClient(connect_s=2, read_s=0.3)
    try:
        first = await asyncio.gather(*(http.post(server.url, "/x", b"{}") for _ in range(2)))
        for response in first:
            await response.read()
            response.close()
        assert server.connections == 2 and len(http._idle[server.url]) == 2
        hung.set()
        with pytest.raises(UpstreamTimeout):
            await http.post(server.url, "/x", b"{}")
        assert not http._idle.get(server.url), "the other old connection went too"
        response = await http.post(server.url, "/x", b"{}")
        assert response.status == 200 and server.connections == 3
        response.close()
    finally:
        await http.aclose()


async def test_connections_to_nodes_use_tcp_keepalive(serve, client) -> None:
    import socket

    server = await serve(ok)
    (await client.post(server.url, "/x", b"{}")).close()
    (conn,) = client._idle[server.url]
    assert conn.transport is not None
    sock = conn.transport.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 15
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30_000
