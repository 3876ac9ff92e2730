"""HTTP/1.1 connections for daphne, parsed by httptools (llhttp) instead of twisted.web.

Daphne's own path builds a twisted `Request` per request: a header line at a time through
`LineReceiver`, `Headers` objects, `getPeer`/`getHost` system calls, an `inlineCallbacks`
generator, then the response through `Request.write`/`finish`. On the gateway's 1 ms request
path that was about 40 % of the process's CPU per request (py-spy under `make bench`;
figures in README). This channel keeps daphne's server exactly as it is (its application
instances, the ASGI scope it builds, `http.disconnect` on finish and on close, its timeouts,
access log and error pages) and replaces only the HTTP parsing and writing.

It speaks keep-alive HTTP/1.1 and HTTP/1.0, chunked request and response bodies, `Expect:
100-continue`, HEAD, and pipelined requests (answered in order, one at a time). A WebSocket
handshake (`Upgrade: websocket`) is handed, with the connection, to daphne's own twisted
channel, which serves WebSockets, unless its path is one of those `install` is told are HTTP
only (the gateway's data plane). There, and on every path for any other protocol (`h2c`), the
offer to switch is declined, as a server may (RFC 9110 §7.8), and the request is served as the
plain HTTP request it also is.

What it cannot serve it answers itself, in the OpenAI error shape the gateway answers in, with
an `x-request-id`, and closes: a request that does not parse (400), a head over 16 KiB (431)
or a target over it (414), an HTTP version other than 1.0 and 1.1 (505), CONNECT (501), a head
or body that stops arriving (408). The connection is closed gently (our side first, then what
the client still sends is read and dropped for a while), so the client reads the answer
instead of a connection reset.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools
from daphne.http_protocol import HTTPFactory
from daphne.utils import HEADER_NAME_RE, INVALID_HEADER_VALUE_BYTES
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper

logger = logging.getLogger(__name__)

# Limits on a request's head, as twisted's channel has them (it answers 400 past them).
MAX_HEAD_BYTES = 16_384
MAX_HEADERS = 500
# A connection with no request in progress for this long is closed, and a request whose head
# or body stops arriving for this long is answered 408; `install` sets it from
# CLAWDBOT_HTTP_IDLE_S.
IDLE_TIMEOUT_S = 75.0
# After an answer that ends the connection before the client has finished sending (413, 400,
# 431), how long what it still sends is read and dropped before the connection is closed (see
# FastHTTPChannel._drain_then_close).
DRAIN_S = 5.0


def _no_path(path: str) -> bool:
    return False


# Paths (the ASGI scope's: decoded, without the query) on which a WebSocket handshake is
# declined and served as HTTP instead of handed to daphne's channel; `install` sets it.
HTTP_ONLY: Callable[[str], bool] = _no_path

STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode("latin-1") for s in HTTPStatus}
NO_BODY_STATUSES = frozenset({204, 304})
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Errors of the server's, not of the request's (501 and 505 are the request's: it asks for
# what this server does not speak).
SERVER_FAULTS = frozenset({500, 502, 503, 504})


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d Unknown Status\r\n" % status
    return line


class _Date:
    """The Date header, formatted once a second rather than once a response."""

    second = -1
    header = b""

    @classmethod
    def line(cls) -> bytes:
        now = time.time()
        if int(now) != cls.second:
            cls.second = int(now)
            cls.header = b"date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
        return cls.header


def request_id() -> bytes:
    """An id for an answer the HTTP layer gives itself, in the gateway's form (req- and 24 hex
    digits) so that every error a client sees carries one. Unique, not secret: see
    gateway/ids.py, which wire may not import."""
    return b"req-%024x" % random.getrandbits(96)


def error_body(status: int, message: str, code: str | None) -> bytes:
    """The OpenAI error shape (gateway/errors.py), so a client's SDK reads the HTTP layer's
    refusals as it reads the gateway's."""
    kind = "server_error" if status in SERVER_FAULTS else "invalid_request_error"
    error = {"message": message, "type": kind, "param": None, "code": code}
    return json.dumps({"error": error}, separators=(",", ":")).encode()


class Refusal(Exception):
    """A request the HTTP layer answers itself, with an error, and then closes the connection."""

    def __init__(self, status: int, message: str, code: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def answer(self, server_name: str) -> bytes:
        body = error_body(self.status, self.message, self.code)
        server = b"server: " + server_name.encode() + b"\r\n" if server_name else b""
        return (
            status_line(self.status)
            + b"content-type: application/json\r\nx-request-id: "
            + request_id()
            + b"\r\ncontent-length: %d\r\n" % len(body)
            + server
            + _Date.line()
            + b"connection: close\r\n\r\n"
            + body
        )


def head_too_large() -> Refusal:
    return Refusal(
        431,
        f"The request's head is over the limit of {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} "
        "header fields.",
        "headers_too_large",
    )


def malformed(exc: httptools.HttpParserError) -> Refusal:
    return Refusal(400, f"The request could not be parsed as HTTP/1.1: {exc}.", "malformed_request")


def timed_out(part: str) -> Refusal:
    return Refusal(
        408,
        f"The request's {part} stopped arriving for {IDLE_TIMEOUT_S:g} s.",
        "request_timeout",
    )


def version_not_supported(version: str) -> Refusal:
    return Refusal(
        505,
        f"HTTP/{version} is not supported: this server speaks HTTP/1.1 and HTTP/1.0.",
        "http_version_not_supported",
    )


@functools.lru_cache(maxsize=4)
def _forwarded_names(
    address: str, port: str | None, proto: str | None
) -> tuple[bytes, bytes | None, bytes | None]:
    return (
        address.lower().encode("latin-1"),
        port.lower().encode("latin-1") if port else None,
        proto.lower().encode("latin-1") if proto else None,
    )


def forwarded_peer(
    headers: list[tuple[bytes, bytes]],
    names: tuple[bytes, bytes | None, bytes | None],
    client_addr: list[Any] | None,
    scheme: str,
) -> tuple[list[Any] | None, str]:
    """The client's address and scheme as the proxy in front reports them (daphne's
    `--proxy-headers`), read as daphne reads them: the first address in the first
    X-Forwarded-For, and X-Forwarded-Port and -Proto only beside it. Unlike daphne, which
    answers a value that is not UTF-8 with a 500, a value that is not ASCII is ignored, as are
    a port that is not one and a scheme other than http or https: these headers only label
    the request, so a bad one is treated as absent."""
    address_name, port_name, proto_name = names
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        lowered = name.lower()
        if lowered in (address_name, port_name, proto_name):
            found.setdefault(lowered, value)
    address = _ascii(found.get(address_name)).partition(",")[0].strip()
    if not address:
        return client_addr, scheme
    port = _ascii(found.get(port_name)) if port_name else ""
    proto = _ascii(found.get(proto_name)).lower() if proto_name else ""
    return (
        [address, int(port) if port.isdigit() and int(port) < 65_536 else 0],
        proto if proto in ("http", "https") else scheme,
    )


def _ascii(value: bytes | None) -> str:
    if value is None:
        return ""
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return ""


class FastRequest:
    """One request on a connection: what daphne's server knows as a `protocol` (the key of
    its connection table, the target of `handle_reply`, `check_timeouts`, `basic_error`)."""

    def __init__(
        self,
        channel: FastHTTPChannel,
        method: bytes,
        url: bytes,
        headers: list[tuple[bytes, bytes]],
        version: str,
        keep_alive: bool,
    ) -> None:
        self.channel: FastHTTPChannel | None = channel
        self.server = channel.server
        self.method = method
        self.uri = url
        self.raw_headers = headers
        self.http_version = version
        self.keep_alive = keep_alive and version == "1.1"
        self.body_parts: list[bytes] = []
        self.body_complete = False
        self.application_queue: Any = None
        self.registered = False
        self.request_start = 0.0
        self.client_addr = channel.client_addr
        self.status = 0
        self.response_headers: list[tuple[bytes, bytes]] = []
        self.started = False  # http.response.start received
        self.head_sent = False
        self.chunked = False
        self.bodyless = method == b"HEAD"
        self.finished = False
        self.sent_length = 0

    # --- the request side

    def start(self) -> None:
        """This request's turn on the connection: build the scope, start the application."""
        self.request_start = time.time()
        self.server.protocol_connected(self)
        self.registered = True
        try:
            self._start()
        except Exception:
            # A bug of ours: an answer, not a hang.
            logger.exception("HTTP processing error")
            self.basic_error(500, b"Internal Server Error", "The request could not be processed.")

    def _start(self) -> None:
        channel = self.channel
        assert channel is not None
        root_path = self.server.root_path
        clean: list[tuple[bytes, bytes]] = []
        expect_continue = False
        for name, value in self.raw_headers:
            if not HEADER_NAME_RE.fullmatch(name):
                self.basic_error(400, b"Bad Request", "Invalid header name.", "invalid_header")
                return
            if INVALID_HEADER_VALUE_BYTES.intersection(value):
                self.basic_error(400, b"Bad Request", "Invalid header value.", "invalid_header")
                return
            if b"_" in name:  # CVE-2015-0219, as daphne
                continue
            lowered = name.lower()
            if lowered == b"daphne-root-path":
                root_path = unquote(value.decode("ascii", "replace"))
            else:
                if lowered == b"expect" and value.lower() == b"100-continue":
                    expect_continue = True
                clean.append((lowered, value))
        path, _, query = self.uri.partition(b"?")
        try:
            path_text = path.decode("ascii")
        except UnicodeDecodeError:
            self.basic_error(400, b"Bad Request", "Invalid characters in path.", "invalid_url")
            return
        try:
            query.decode("ascii")
        except UnicodeDecodeError:
            self.basic_error(400, b"Bad Request", "Invalid query string.", "invalid_url")
            return
        client_addr, scheme = channel.client_addr, channel.scheme
        server = self.server
        if server.proxy_forwarded_address_header:
            client_addr, scheme = forwarded_peer(
                self.raw_headers,
                _forwarded_names(
                    server.proxy_forwarded_address_header,
                    server.proxy_forwarded_port_header,
                    server.proxy_forwarded_proto_header,
                ),
                client_addr,
                scheme,
            )
            self.client_addr = client_addr
        if expect_continue and not self.body_complete and self.http_version == "1.1":
            channel.write(CONTINUE)
        self.application_queue = self.server.create_application(
            self,
            {
                "type": "http",
                "http_version": self.http_version,
                "method": self.method.decode("ascii"),
                "path": unquote(path_text),
                "raw_path": path,
                "root_path": root_path,
                "scheme": scheme,
                "query_string": query,
                "headers": clean,
                "client": client_addr,
                "server": channel.server_addr,
            },
        )
        if self.application_queue is None:
            return
        if self.body_complete or self.body_parts:  # what arrived before its turn
            body, self.body_parts = b"".join(self.body_parts), []
            self.application_queue.put_nowait(
                {"type": "http.request", "body": body, "more_body": not self.body_complete}
            )

    def body_received(self, chunk: bytes) -> None:
        if self.finished:
            return  # answered already (413, say): the rest of the body is dropped
        if self.application_queue is None:
            self.body_parts.append(chunk)
        else:
            self.application_queue.put_nowait(
                {"type": "http.request", "body": chunk, "more_body": True}
            )

    def message_complete(self) -> None:
        self.body_complete = True
        if self.application_queue is not None and not self.finished:
            self.application_queue.put_nowait(
                {"type": "http.request", "body": b"", "more_body": False}
            )

    def connection_lost(self) -> None:
        """The client is gone, or the rest of this request cannot be read: its application is
        told the client is gone, and whatever it answers is dropped."""
        self.channel = None
        if self.application_queue is not None and not self.finished:
            self.application_queue.put_nowait({"type": "http.disconnect"})
        if self.registered and not self.finished:
            self.server.protocol_disconnected(self)

    # --- the response side (daphne's server calls these)

    def handle_reply(self, message: dict[str, Any]) -> None:
        if self.finished or self.channel is None:
            return
        kind = message.get("type")
        if kind == "http.response.start":
            if self.started:
                raise ValueError("HTTP response has already been started")
            if "status" not in message:
                raise ValueError("Specifying a status code is required for a Response message.")
            self.started = True
            self.status = int(message["status"])
            self.response_headers = list(message.get("headers", ()))
        elif kind == "http.response.body":
            if not self.started:
                raise ValueError(f"HTTP response has not yet been started but got {kind}")
            body = message.get("body", b"")
            more_body = message.get("more_body", False)
            if not self.head_sent:
                self._send_head(body, more_body)
            elif body and not self.bodyless:
                self._send_body(body)
            if not more_body:
                self._finish()
        else:
            raise ValueError(f"Cannot handle message type {kind}!")

    def _send_head(self, body: bytes, more_body: bool) -> None:
        self.head_sent = True
        status = self.status
        if status in NO_BODY_STATUSES or status < 200:
            self.bodyless = True
        parts = [status_line(status)]
        has_length = has_server = False
        for name, value in self.response_headers:
            lowered = name.lower()
            if lowered == b"content-length":
                has_length = True
            elif lowered == b"transfer-encoding":
                continue  # framing is the server's (ASGI); never chunk twice
            elif lowered == b"server":
                has_server = True
            elif lowered == b"connection" and value.lower() == b"close":
                self.keep_alive = False
            if b"\r" in value or b"\n" in value:
                value = value.replace(b"\r", b" ").replace(b"\n", b" ")  # no injected lines
            parts.append(name + b": " + value + b"\r\n")
        if not has_server and self.server.server_name:
            parts.append(b"server: " + self.server.server_name.encode() + b"\r\n")
        parts.append(_Date.line())
        if not has_length and not self.bodyless:
            if not more_body:
                parts.append(b"content-length: %d\r\n" % len(body))
            elif self.http_version == "1.1":
                self.chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
            else:
                self.keep_alive = False  # HTTP/1.0: the end of the body is the close
        if not self.body_complete:
            self.keep_alive = False  # answered before its body was read (413): see request_done
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if body and not self.bodyless:
            parts.append(self._framed(body))
        assert self.channel is not None
        self.channel.write(b"".join(parts))

    def _send_body(self, body: bytes) -> None:
        assert self.channel is not None
        self.channel.write(self._framed(body))

    def _framed(self, body: bytes) -> bytes:
        self.sent_length += len(body)
        return b"%x\r\n%s\r\n" % (len(body), body) if self.chunked else body

    def _finish(self) -> None:
        self.finished = True
        channel = self.channel
        assert channel is not None
        if self.chunked:
            channel.write(b"0\r\n\r\n")
        if self.application_queue is not None:
            self.application_queue.put_nowait({"type": "http.disconnect"})
        self.server.protocol_disconnected(self)
        if self.server.action_logger:
            try:
                self._log()
            except Exception:
                logger.exception("access log failed")
        channel.request_done(self)

    def _log(self) -> None:
        self.server.log_action(
            "http",
            "complete",
            {
                "path": self.uri.decode("ascii", "replace"),
                "status": self.status,
                "method": self.method.decode("ascii", "replace"),
                "client": "{}:{}".format(*self.client_addr) if self.client_addr else None,
                "time_taken": self.duration(),
                "size": self.sent_length,
            },
        )

    def handle_exception(self, exception: BaseException) -> None:
        if self.started:
            self.abort()  # half a response is out: the client must see it end badly
        else:
            self.basic_error(500, b"Internal Server Error", "Exception inside application.")

    def check_timeouts(self) -> None:
        timeout = self.server.http_timeout
        if not timeout or self.finished or self.duration() <= timeout:
            return
        if self.started:
            self.abort()
        else:
            self.basic_error(
                503,
                b"Service Unavailable",
                "The application failed to respond within the time limit.",
                "timeout",
            )

    def abort(self) -> None:
        channel = self.channel
        if channel is not None and channel.transport is not None:
            channel.transport.loseConnection()

    def duration(self) -> float:
        return time.time() - self.request_start if self.request_start else 0.0

    def basic_error(
        self, status: int, status_text: bytes, message: str, code: str | None = None
    ) -> None:
        """An error answered by the server rather than the application (daphne's server calls
        this too): in the OpenAI shape, not daphne's HTML page."""
        if self.started or self.finished:
            self.abort()
            return
        self.handle_reply(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"x-request-id", request_id()),
                ],
            }
        )
        self.handle_reply({"type": "http.response.body", "body": error_body(status, message, code)})

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


class FastHTTPChannel(Protocol):
    """One client connection: parses requests and answers them in order."""

    transport: Any  # twisted's zope interfaces do not type-check as plain classes

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.server = factory.server
        self.parser = httptools.HttpRequestParser(self)
        self.client_addr: list[Any] | None = None
        self.server_addr: list[Any] | None = None
        self.scheme = "http"
        self.current: FastRequest | None = None  # being answered
        self.parsing: FastRequest | None = None  # its body being read (may be `current`)
        self.waiting: deque[FastRequest] = deque()  # read, waiting for their turn
        self.paused = False
        self.closed = False
        # What ends this connection once the requests ahead of it are answered: a refusal to
        # write (a bad request behind others), or a WebSocket handshake's bytes and what followed
        # them, for daphne's channel. Nothing more is parsed meanwhile.
        self.final: Refusal | bytes | None = None
        self.advancing = False  # starting the next requests (see request_done)
        self.closing = False  # our side is closing: what still comes is dropped
        self.drain_timer: Any = None
        self._head_fed = 0  # bytes fed while a request's head is incomplete
        self._in_head = False
        self._body_moved = False  # a body's bytes arrived since the last idle check
        self._watched: FastRequest | None = None  # whose body the last idle check saw
        self.idle_since = time.monotonic()
        self.idle_timer: Any = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0

    # --- twisted Protocol

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)  # head and body go out as written, not held for an ACK
        peer, host = transport.getPeer(), transport.getHost()
        if hasattr(peer, "host") and hasattr(peer, "port"):
            self.client_addr = [str(peer.host), peer.port]
            self.server_addr = [str(host.host), host.port]
        if ISSLTransport.providedBy(transport):
            self.scheme = "https"
        self.idle_timer = _reactor().callLater(IDLE_TIMEOUT_S, self._check_idle)

    def dataReceived(self, data: bytes) -> None:
        if self.closed or self.closing or self.final is not None:
            if type(self.final) is bytes:
                self.final += data  # a TLS layer may deliver past the pause: for daphne too
            return
        if self._in_head:
            # httptools gathers a header value itself before calling on_header, so a value
            # that never ends must be cut off here, not there.
            self._head_fed += len(data)
            if self._head_fed > MAX_HEAD_BYTES + 65_536:
                self._reject(head_too_large())
                return
        while True:
            try:
                self.parser.feed_data(data)
                return
            except httptools.HttpParserUpgrade as upgrade:
                # A loop, not recursion: what follows may hold many more such requests.
                rest = self._upgrade(data[upgrade.args[0] :])
                if rest is None:
                    return
                data = rest
            except httptools.HttpParserCallbackError as exc:
                if isinstance(exc.__context__, Refusal):
                    self._reject(exc.__context__)
                else:
                    logger.error("HTTP processing error", exc_info=exc.__context__)
                    self._reject(Refusal(500, "The request could not be processed.", None))
                return
            except httptools.HttpParserError as exc:
                if self.parser.get_method() == b"PRI":  # "PRI * HTTP/2.0": HTTP/2 preface
                    self._reject(version_not_supported("2.0"))
                else:
                    self._reject(malformed(exc))
                return

    def connectionLost(self, reason: Any = None) -> None:
        self._stop()
        seen = set()
        for request in (self.current, *self.waiting, self.parsing):
            if request is not None and id(request) not in seen:
                seen.add(id(request))
                request.connection_lost()
        self.current = self.parsing = None
        self.waiting.clear()

    def _stop(self) -> None:
        """Nothing more is read or written through this channel."""
        self.closed = True
        for timer in (self.idle_timer, self.drain_timer):
            if timer is not None and timer.active():
                timer.cancel()

    # --- httptools callbacks

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_fed = 0
        self._url = b""
        self._headers = []
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEAD_BYTES:
            raise Refusal(
                414, f"The request target is over {MAX_HEAD_BYTES} bytes.", "url_too_long"
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD_BYTES or len(self._headers) > MAX_HEADERS:
            raise head_too_large()

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self.parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise version_not_supported(version)
        if parser.should_upgrade():
            return  # feed_data raises HttpParserUpgrade: see _upgrade
        request = FastRequest(
            self, parser.get_method(), self._url, self._headers, version, parser.should_keep_alive()
        )
        self.parsing = request
        if self.current is None:
            self.current = request
            self.idle_since = 0.0
            request.start()
        else:
            self.waiting.append(request)
            self._pause()  # one request ahead is enough; TCP holds the rest

    def on_body(self, chunk: bytes) -> None:
        self._body_moved = True
        if self.parsing is not None:
            self.parsing.body_received(chunk)

    def on_message_complete(self) -> None:
        request, self.parsing = self.parsing, None
        if request is not None:
            request.message_complete()

    def _upgrade(self, rest: bytes) -> bytes | None:
        """A request that offers to switch protocols. A WebSocket handshake on a path that is
        not HTTP only goes, with `rest` (what followed its head), to daphne's channel. Any
        other offer is declined (RFC 9110 §7.8 lets a server ignore it) and the request served
        as plain HTTP: the head again without its Upgrade field, then `rest`, for a fresh
        parser. llhttp ends an upgrade request at its head whatever its framing says, so this
        is also how a body it declares is read as its body and not as the next request.
        Returns what to parse next, or None if nothing more is parsed here."""
        parser = self.parser
        method = parser.get_method()
        if method == b"CONNECT":
            self._reject(
                Refusal(
                    501, "CONNECT is not supported: this server is not a proxy.", "not_implemented"
                )
            )
            return None
        version = parser.get_http_version().encode()
        line = b"%s %s HTTP/%s\r\n" % (method, self._url, version)
        if version == b"1.1" and self._is_websocket_handshake():
            self._hand_over(line + self._handshake_fields() + b"\r\n" + rest)
            return None
        fields = b"".join(
            name + b": " + value + b"\r\n"
            for name, value in self._headers
            if name.lower() != b"upgrade"
        )
        self.parser = httptools.HttpRequestParser(self)
        return line + fields + b"\r\n" + rest

    def _is_websocket_handshake(self) -> bool:
        """Whether daphne's channel would take this request for a WebSocket handshake (its
        first Upgrade field says websocket) and its path is not HTTP only. A path that is not
        ASCII is not: served as HTTP, it is answered 400."""
        upgrade = next((value for name, value in self._headers if name.lower() == b"upgrade"), b"")
        if upgrade.strip().lower() != b"websocket":
            return False
        try:
            path = self._url.partition(b"?")[0].decode("ascii")
        except UnicodeDecodeError:
            return False
        return not HTTP_ONLY(unquote(path))

    def _handshake_fields(self) -> bytes:
        """The handshake's header fields for daphne's channel, less those whose value is not
        ASCII among the ones daphne decodes strictly and answers with a 500 when it cannot
        (the proxy's X-Forwarded-* fields, Sec-WebSocket-Protocol): as in forwarded_peer, a
        value that cannot be used is treated as absent."""
        server = self.server
        strict: set[bytes | None] = {b"sec-websocket-protocol"}
        if server.proxy_forwarded_address_header:
            strict.update(
                _forwarded_names(
                    server.proxy_forwarded_address_header,
                    server.proxy_forwarded_port_header,
                    server.proxy_forwarded_proto_header,
                )
            )
        return b"".join(
            name + b": " + value + b"\r\n"
            for name, value in self._headers
            if value.isascii() or name.lower() not in strict
        )

    def _hand_over(self, data: bytes) -> None:
        if self.current is None:
            self._switch_to_twisted(data)
        else:
            self.final = data  # its turn comes after the answers ahead of it
            self._pause()

    def _switch_to_twisted(self, data: bytes) -> None:
        """Give the connection to daphne's own twisted channel, which parses `data` again and
        hands the handshake to daphne's WebSocket protocol. This channel is done with it."""
        transport = self.transport
        assert transport is not None
        self._stop()
        channel = ORIGINAL_BUILD_PROTOCOL(self.factory, None)
        if isinstance(transport, ProtocolWrapper):  # TLS
            transport.wrappedProtocol = channel
        else:
            transport.protocol = channel
        channel.makeConnection(transport)
        if self.paused:
            self.paused = False
            transport.resumeProducing()
        channel.dataReceived(data)

    # --- writing and turn-taking

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def request_done(self, request: FastRequest) -> None:
        if request is not self.current:
            return
        self.current = None
        if not request.body_complete:
            # Answered before the whole body came (413): what follows on this connection
            # cannot be told apart from the rest of that body, so it ends, gently.
            self._drain_then_close()
            return
        if not request.keep_alive:
            self._close()
            return
        if self.advancing:
            return  # a request answered as it started: the loop below goes on
        self.advancing = True
        try:
            # A loop, not recursion: each started request may be answered at once (400).
            while self.current is None and self.waiting and not self.closing:
                self.current = self.waiting.popleft()
                self.current.start()
        finally:
            self.advancing = False
        if self.current is not None or self.closing:
            return
        self.idle_since = time.monotonic()
        final, self.final = self.final, None
        if isinstance(final, Refusal):
            self._write_rejection(final)
            return
        if final is not None:
            self._switch_to_twisted(final)
            return
        if self.paused:
            self.paused = False
            if self.transport is not None:
                self.transport.resumeProducing()

    def _pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pauseProducing()

    def _drain_then_close(self) -> None:
        """Close after an answer the client may not have finished sending to: closing with
        unread bytes makes the kernel send a reset, which can destroy the answer before the
        client reads it. So our side ends first, and what still comes is read and dropped
        for up to DRAIN_S (the client closes when it has read the answer)."""
        self.closing = True
        if self.transport is not None:
            if self.paused:
                self.paused = False
                self.transport.resumeProducing()
            self.transport.loseWriteConnection()
            self.drain_timer = _reactor().callLater(DRAIN_S, self._close)

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.loseConnection()

    def _reject(self, refusal: Refusal) -> None:
        """A request that cannot be read: answer it and close; behind requests still being
        answered, once they are. If it is the request being answered (its body broke off or
        stopped), its application is told the client is gone: its body will never end."""
        broken, self.parsing = self.parsing, None
        self._in_head = False
        if broken is not None:
            if broken is self.current:
                if broken.head_sent:
                    self._close()  # half an answer is out: the client must see it end badly
                    return
                self.current = None
                broken.connection_lost()
            elif broken in self.waiting:
                self.waiting.remove(broken)  # never started
        if self.current is not None or self.waiting:
            self.final = refusal  # nothing more is read from this connection
            self._pause()
            return
        self._write_rejection(refusal)

    def _write_rejection(self, refusal: Refusal) -> None:
        self.write(refusal.answer(self.server.server_name))
        self._drain_then_close()

    def _check_idle(self) -> None:
        if self.closed or self.closing:
            return
        remaining = IDLE_TIMEOUT_S
        if self.current is None and not self.waiting and self.idle_since:
            remaining -= time.monotonic() - self.idle_since
            if remaining <= 0:
                if self._in_head:
                    self._reject(timed_out("head"))  # slowloris: a head sent a byte at a time
                else:
                    self._close()
                return
        elif self.parsing is not None and self.parsing is self.current and not self.paused:
            # Its body is still coming: a whole interval without a byte of it is a stall.
            if self._watched is self.parsing and not self._body_moved:
                self._reject(timed_out("body"))
                return
            self._watched, self._body_moved = self.parsing, False
        self.idle_timer = _reactor().callLater(max(remaining, 0.25), self._check_idle)


ORIGINAL_BUILD_PROTOCOL = HTTPFactory.buildProtocol


def _reactor() -> Any:
    # Imported late: importing it installs twisted's default reactor unless daphne has
    # installed the asyncio one first, and this module may be imported before that.
    from twisted.internet import reactor

    return reactor


def build_protocol(self: Any, addr: Any) -> FastHTTPChannel:
    return FastHTTPChannel(self)


def http11_only(self: Any) -> list[bytes]:
    # Over TLS, ALPN must not offer h2: this channel speaks HTTP/1.1 only.
    return [b"http/1.1"]


def install(
    idle_timeout_s: float | None = None, http_only: Callable[[str], bool] | None = None
) -> None:
    """Serve daphne's HTTP connections with FastHTTPChannel (idempotent). `http_only` says on
    which paths (the ASGI scope's) a WebSocket handshake is declined and served as HTTP; on
    every other path it goes to daphne's own channel."""
    global IDLE_TIMEOUT_S, HTTP_ONLY
    if idle_timeout_s is not None:
        IDLE_TIMEOUT_S = idle_timeout_s
    if http_only is not None:
        HTTP_ONLY = http_only
    factory: Any = HTTPFactory
    if factory.buildProtocol is not build_protocol:
        factory.buildProtocol = build_protocol
        factory.acceptableProtocols = http11_only
