"""Measured changes to daphne's HTTP layer (twisted underneath), applied once when the ASGI
application is loaded. The request path is about a millisecond long; these were the largest
costs on it that bought nothing (py-spy under `make bench`; figures in README).

1. HTTP parsing and writing: twisted.web's channel and daphne's request object cost about
   40 % of the process's CPU per request. `wire.http_server` parses with httptools instead and
   keeps the rest of daphne (application instances, scope, timeouts, access log).
2. Twisted never writes on `transport.write()`: it buffers, asks the reactor to watch the
   socket for writability and sends on the next loop iteration. Under the asyncio reactor
   that is two epoll_ctl calls and one more loop turn per response (about 7 % of the CPU and
   one iteration of latency). When nothing is queued ahead, the patched write sends at once
   and leaves only what the socket would not take to twisted's usual path."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


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


def apply(*, idle_timeout_s: float, http_only: Callable[[str], bool]) -> None:
    """`http_only` says on which paths a WebSocket handshake is declined and served as HTTP
    (see wire.http_server.install)."""
    try:
        from wire import http_server
    except ImportError:  # not running under daphne
        pass
    else:
        http_server.install(idle_timeout_s=idle_timeout_s, http_only=http_only)
    write_eagerly()
