"""The data plane's one upstream client: HTTP/1.1 keep-alive connections to the nodes, answers
parsed by httptools (llhttp, the parser in Node.js and uvicorn).

Why not httpx here: per proxied request, sequential POSTs to the zero-latency simulator on one
core, httpx on the httpx-aiohttp transport cost 340 µs of CPU, aiohttp directly 191 µs, this
client 88 µs. At one connection that difference is most of the gateway's latency budget, and
the nodes are our own Ollama/vLLM servers speaking plain HTTP/1.1: a general client's layers
(cookies, redirects, proxies, auth, tracing, URL objects) buy nothing on this path. The control
plane (probes, onboarding, model loading) keeps httpx.

One request at a time per connection; connections go back to a per-node idle pool only after
a complete answer the node agreed to keep alive. A pooled connection the node closed while it
sat idle is detected and the request is sent once more on a fresh one, because no byte of an
answer had arrived (so the node never saw the request).

Idle connections are not trusted forever: one idle longer than `max_idle_s` is closed
instead of reused (a NAT or firewall may have dropped it without a word); TCP keepalive and
TCP_USER_TIMEOUT make a peer that vanished fail its requests in about 30 s instead of at the
first-byte timeout; and a connection that times out (or whose peer stops acknowledging)
takes the node's idle connections with it: they were opened the same way, and the next
request is better off on a new one."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

# Stop reading a streaming answer past this much unread data: a slow client must not make
# the gateway buffer a whole answer in memory.
HIGH_WATER = 256 * 1024
MAX_IDLE_PER_NODE = 256
# A node closing an idle pooled connection just as a request goes out shows as a disconnect
# within a round trip: the request is sent again on a new connection. A later disconnect with
# no byte of answer is a node that failed while working on it (Ollama sends nothing during a
# prefill): sending it again to the same node would run it twice, so it is an error, which
# the proxy takes to another node.
STALE_RESEND_S = 0.5
MAX_IDLE_S = 30.0  # an idle pooled connection older than this is closed, not reused
# TCP keepalive: a connection silent this long is probed, every interval, and given up after
# count unanswered probes. A live node's kernel answers them even mid-prefill. Keepalive
# does not run while sent data is unacknowledged (a request written into a connection a NAT
# dropped): TCP_USER_TIMEOUT bounds that wait the same way, where the kernel would otherwise
# retransmit for about 15 minutes.
KEEPALIVE_IDLE_S = 15
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 3
UNACKED_LIMIT_MS = (KEEPALIVE_IDLE_S + KEEPALIVE_INTERVAL_S * KEEPALIVE_COUNT) * 1000


class UpstreamError(Exception):
    """The node could not be reached or stopped answering properly."""


class UpstreamConnectError(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamDisconnected(UpstreamError):
    pass


@dataclass(frozen=True, slots=True)
class Origin:
    host: str
    port: int
    tls: bool
    prefix: bytes  # the base URL's path, e.g. b"/ollama" behind a reverse proxy
    host_header: bytes


def parse_origin(base_url: str) -> Origin:
    parts = urlsplit(base_url)
    tls = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if tls else 80)
    return Origin(
        host=host,
        port=port,
        tls=tls,
        prefix=parts.path.rstrip("/").encode(),
        host_header=parts.netloc.rsplit("@", 1)[-1].encode(),
    )


class UpstreamResponse:
    """An answer whose status is known; read the body with `read()` or `async for`, then
    `close()` (which returns the connection to the pool when the answer was complete)."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_error",
        "_headers_by",
        "_loop",
        "_paused",
        "_read_s",
        "_timer",
        "_unbounded",
        "_wait_started",
        "_waiter",
        "complete",
        "got_body",
        "got_bytes",
        "has_length",
        "headers_done",
        "keep_alive",
        "sent_at",
        "status",
    )

    def __init__(
        self, conn: _Connection, loop: asyncio.AbstractEventLoop, first_byte_s: float, read_s: float
    ) -> None:
        self._conn = conn
        self._loop = loop
        self._read_s = read_s
        # Until the first byte of the body: the node's whole prefill (and, answering without
        # streaming, its whole generation) may pass, so that wait has its own, longer limit.
        # Ollama sends its status line with the first token, vLLM its status line at once and
        # its first event after the prefill: the body's first byte is the same moment for both.
        self.sent_at = loop.time()
        self._headers_by = self.sent_at + first_byte_s
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._unbounded = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._wait_started = 0.0
        self.status = 0
        self.complete = False
        self.headers_done = False
        self.has_length = False
        self.keep_alive = False
        self.got_bytes = False
        self.got_body = False

    # -- fed by the connection ---------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _feed(self, data: bytes) -> None:
        if not self.got_body:
            self.got_body = True
            if self._timer is not None:
                # Armed for the first-byte deadline: from here the (shorter) read limit
                # applies, armed by the next wait.
                self._timer.cancel()
                self._timer = None
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and not self._unbounded and not self._paused:
            self._paused = True
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        self.complete = True
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None and not self.complete:
            self._error = error
        self._wake()

    # -- read by the proxy -------------------------------------------------------------------

    async def _wait(self) -> None:
        """Until something arrives; UpstreamTimeout after read_s with nothing (before the
        headers: at the first-byte deadline)."""
        self._waiter = self._loop.create_future()
        self._wait_started = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_at(self._due(), self._check)
        await self._waiter

    def _due(self) -> float:
        return self._headers_by if not self.got_body else self._wait_started + self._read_s

    def _check(self) -> None:
        # One timer per answer, re-armed lazily, rather than a timer per read.
        self._timer = None
        if self._waiter is None or self.complete or self._error is not None:
            return
        due = self._due()
        if self._loop.time() >= due - 0.001:
            if self.got_body:
                reason = f"no data from the node for {self._read_s:g} s"
            else:
                reason = "no answer from the node within the first-byte timeout"
            self._fail(UpstreamTimeout(reason))
            self._conn.abort()
            self._conn.client.drop_idle(self._conn.key)
        else:
            self._timer = self._loop.call_at(due, self._check)

    async def wait_headers(
        self, idle_s: float = 0.0, on_idle: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Until the status line and headers; with `on_idle`, call it every `idle_s` of
        waiting (the proxy keeps a streaming client's connection alive through a prefill)."""
        while not self.headers_done:
            if self._error is not None:
                raise self._error
            if on_idle is None:
                await self._wait()
                continue
            tick = self._loop.call_later(idle_s, self._wake)
            try:
                await self._wait()
            finally:
                tick.cancel()
            if not self.headers_done and self._error is None:
                await on_idle()

    async def read(self) -> bytes:
        """The whole body."""
        self._unbounded = True
        if self._paused:
            self._paused = False
            self._conn.resume()
        while not self.complete:
            if self._error is not None:
                raise self._error
            await self._wait()
        chunks, self._chunks = self._chunks, deque()
        self._buffered = 0
        return b"".join(chunks)

    def __aiter__(self) -> UpstreamResponse:
        return self

    async def __anext__(self) -> bytes:
        """Whatever arrived since the last call, joined; boundaries are arbitrary."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self.complete:
                raise StopAsyncIteration
            await self._wait()
        chunks = self._chunks
        if len(chunks) == 1:
            data = chunks.popleft()
        else:
            data = b"".join(chunks)
            chunks.clear()
        self._buffered = 0
        if self._paused:
            self._paused = False
            self._conn.resume()
        return data

    def close(self) -> None:
        """Pool the connection after a complete answer; otherwise drop it (the node stops)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        conn = self._conn
        if conn.response is not self:
            return
        conn.response = None
        if self.complete and self.keep_alive and self._error is None and not conn.closed:
            conn.release()
        else:
            conn.abort()


class _Connection(asyncio.Protocol):
    def __init__(self, client: UpstreamClient, key: str) -> None:
        self.client = client
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.idle_since = 0.0

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            _keep_alive(sock)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes nobody asked for: the connection is not reusable
            self.abort()
            return
        response.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response._fail(UpstreamError(f"the node sent malformed HTTP: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if isinstance(exc, TimeoutError):  # keepalive or unacknowledged data: the path died
            self.client.drop_idle(self.key)
        response = self.response
        if response is None:
            self.client._forget(self)  # closed by the node while idle
            return
        if response.complete:
            return
        if response.headers_done and not response.has_length and exc is None:
            response._finish()  # an answer delimited by the end of the connection
        else:
            response._fail(UpstreamDisconnected("the node closed the connection mid-answer"))

    # -- httptools callbacks -----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length" or lowered == b"transfer-encoding":
            assert self.response is not None
            self.response.has_length = True

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        response.status = self.parser.get_status_code()
        response.keep_alive = self.parser.should_keep_alive()
        response.headers_done = True
        response._wake()

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response._feed(body)

    def on_message_complete(self) -> None:
        assert self.response is not None
        self.response._finish()

    # -- used by the client and the response -------------------------------------------------

    def send(
        self, payload: bytes, loop: asyncio.AbstractEventLoop, first_byte_s: float, read_s: float
    ) -> UpstreamResponse:
        assert self.transport is not None
        self.response = UpstreamResponse(self, loop, first_byte_s, read_s)
        self.transport.write(payload)
        return self.response

    def pause(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def release(self) -> None:
        # The parser carries on with the next answer on this connection (llhttp keep-alive).
        self.client._pool(self)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class UpstreamClient:
    def __init__(
        self,
        *,
        connect_s: float,
        read_s: float,
        first_byte_s: float = 0.0,
        stale_resend_s: float = STALE_RESEND_S,
        max_idle_s: float = MAX_IDLE_S,
    ) -> None:
        self.connect_s = connect_s
        self.read_s = read_s
        self.first_byte_s = first_byte_s or read_s
        self.stale_resend_s = stale_resend_s
        self.max_idle_s = max_idle_s
        self._origins: dict[str, Origin] = {}
        self._idle: dict[str, list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None

    async def post(
        self,
        base_url: str,
        path: str,
        body: bytes,
        idle_s: float = 0.0,
        on_idle: Callable[[], Awaitable[None]] | None = None,
    ) -> UpstreamResponse:
        """Send a JSON body; returns once the status line and headers arrived (calling
        `on_idle` every `idle_s` until then, if given). Raises UpstreamError subclasses when
        the node cannot be reached, drops the connection or times out."""
        origin = self._origins.get(base_url)
        if origin is None:
            origin = self._origins[base_url] = parse_origin(base_url)
        payload = b"".join(
            (
                b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\n"
                b"accept: */*\r\ncontent-length: %d\r\n\r\n"
                % (origin.prefix + path.encode(), origin.host_header, len(body)),
                body,
            )
        )
        loop = asyncio.get_running_loop()
        while True:
            conn = self._take_idle(base_url)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(base_url, origin, loop)
            response = conn.send(payload, loop, self.first_byte_s, self.read_s)
            try:
                await response.wait_headers(idle_s, on_idle)
            except UpstreamDisconnected:
                response.close()
                if reused and not response.got_bytes and self._just_sent(response, loop):
                    continue  # the node closed it while idle: it never saw this request
                raise
            except BaseException:
                response.close()
                raise
            return response

    def _just_sent(self, response: UpstreamResponse, loop: asyncio.AbstractEventLoop) -> bool:
        return loop.time() - response.sent_at < self.stale_resend_s

    def _take_idle(self, key: str) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        # Newest last: the oldest, at the front, are the first to go stale.
        oldest_kept = asyncio.get_running_loop().time() - self.max_idle_s
        while idle and idle[0].idle_since < oldest_kept:
            idle.pop(0).abort()
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    def _pool(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) < MAX_IDLE_PER_NODE:
            conn.idle_since = asyncio.get_running_loop().time()
            idle.append(conn)
        else:
            conn.abort()

    def drop_idle(self, key: str) -> None:
        """Close every idle connection to a node (one of its connections just timed out)."""
        for conn in self._idle.pop(key, ()):
            conn.abort()

    def _forget(self, conn: _Connection) -> None:
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    async def _connect(
        self, key: str, origin: Origin, loop: asyncio.AbstractEventLoop
    ) -> _Connection:
        tls: ssl.SSLContext | None = None
        if origin.tls:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        try:
            async with asyncio.timeout(self.connect_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, key),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except TimeoutError:
            raise UpstreamTimeout(f"no connection within {self.connect_s:g} s") from None
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake
            raise UpstreamConnectError(str(exc) or exc.__class__.__name__) from None
        return conn

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()


def _keep_alive(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; macOS names only the interval
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, UNACKED_LIMIT_MS)
    except OSError:
        pass  # not TCP (a unix socket in tests), or options this platform lacks
