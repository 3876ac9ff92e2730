"""Measured fixes to daphne's HTTP layer (twisted underneath), applied once when the ASGI
application is loaded. Each one removes work whose result nobody uses, on a request path
that is otherwise about a millisecond long (py-spy under `make bench`; figures in README).

1. Twisted (24 and later) parses every POST's Content-Type with the `email` package to find
   HTML form submissions: about a fifth of the CPU per request. Daphne hands the raw body to
   the ASGI application and never reads twisted's parsed form arguments.
2. Twisted's HTTPFactory formats a combined-log access line for every request and hands it
   to twisted's global log, which nobody observes under daphne (daphne writes its own access
   log): about 4 % of the CPU per request, and the buffered events cost memory.
3. Twisted never writes on `transport.write()`: it buffers, asks the reactor to watch the
   socket for writability and sends on the next loop iteration. Under the asyncio reactor
   that is two epoll_ctl calls and one more loop turn per response (about 7 % of the CPU and
   one iteration of latency). When nothing is queued ahead, the patched write sends at once
   and leaves only what the socket would not take to twisted's usual path.
4. Daphne leaves Nagle's algorithm on: with eager writes, a response's header and body
   segments could wait for an ACK between them. TCP_NODELAY, as asyncio sets on its own
   sockets."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def skip_form_parsing() -> None:
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:  # not running under daphne
        return
    if getattr(WebRequest, "_clawdbot_tuned", False):
        return
    original = WebRequest.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._parsePOSTFormSubmission = False

    WebRequest.__init__ = __init__
    WebRequest._clawdbot_tuned = True


def skip_twisted_access_log() -> None:
    try:
        from daphne.http_protocol import HTTPFactory
    except ImportError:
        return
    if getattr(HTTPFactory, "_clawdbot_tuned", False):
        return

    def log(self: Any, request: Any) -> None:
        return None

    HTTPFactory.log = log
    HTTPFactory._clawdbot_tuned = True


def write_eagerly() -> None:
    try:
        from twisted.internet import tcp
    except ImportError:
        return

    connection: Any = tcp.Connection
    if getattr(connection, "_clawdbot_eager", False):
        return
    buffered_write = connection.write

    def idle(self: Any) -> bool:
        # Nothing queued ahead (so order is kept), no TLS layer, still open.
        return (
            not self.TLS
            and self.connected
            and not self._writeDisconnected
            and not self._tempDataLen
            and self.offset == len(self.dataBuffer)
        )

    def write(self: Any, data: bytes) -> None:
        if data and type(data) is bytes and idle(self):
            try:
                sent = self.socket.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = 0  # let twisted's own write path meet the error and close properly
            if sent == len(data):
                return
            data = data[sent:]
        buffered_write(self, data)

    def write_sequence(self: Any, iovec: Iterable[bytes]) -> None:
        write(self, b"".join(iovec))

    connection.write = write
    connection.writeSequence = write_sequence
    connection._clawdbot_eager = True


def no_delay() -> None:
    try:
        from twisted.web.http import HTTPChannel
    except ImportError:
        return
    channel: Any = HTTPChannel
    if getattr(channel, "_clawdbot_no_delay", False):
        return
    original = channel.connectionMade

    def connectionMade(self: Any) -> None:
        original(self)
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)

    channel.connectionMade = connectionMade
    channel._clawdbot_no_delay = True


def apply() -> None:
    skip_form_parsing()
    skip_twisted_access_log()
    write_eagerly()
    no_delay()
