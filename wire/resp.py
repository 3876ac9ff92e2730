"""A minimal Redis client for the two script calls on the request path (admit and close).

redis-py's asyncio client spends about 0.2 ms of CPU per call on connection-pool locking,
retry wrappers and command packing (measured: 380-580 µs per sequential EVALSHA against
174 µs for a stream-based call written here, and less again for this protocol-based one).
Everything that is not on the hot path keeps using redis-py.

One pipelined connection per process: calls are written as they come and their replies
matched in order (Redis answers a connection's commands in order), so concurrent requests
share one socket and need no pool. A caller that is cancelled simply leaves its reply to be
read and dropped; nothing gets out of step. If the oldest unanswered call waits longer than
the timeout, the connection is dropped and every waiting call fails with RespError."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis


class RespError(Exception):
    """Redis answered with an error, or the connection failed."""


class NoScript(RespError):
    pass


_PUSHES = (b"pmessage", b"message")


def encode(args: tuple[Any, ...]) -> bytes:
    """A command in RESP; hiredis packs it in C (three times faster than Python here)."""
    return bytes(hiredis.pack_command(args))


class _Connection(asyncio.Protocol):
    loop: asyncio.AbstractEventLoop  # set once connected

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = hiredis.Reader()
        self.pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.closed = False
        # A subscriber connection (RespClient.subscribe) hands published messages here;
        # they come unasked, so they must not be matched with a call.
        self.on_push: Callable[[list[Any]], None] | None = None
        self.lost: asyncio.Future[None] | None = None
        # The scripts this connection sent SCRIPT LOAD for (RespClient.evalsha); all forgotten
        # at a NOSCRIPT reply to anyone, since Redis has lost its scripts.
        self.scripts: set[str] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # Kept, so a call need not ask for the running loop: on Python 3.11 each asking
        # is a getpid system call.
        self.loop = asyncio.get_running_loop()
        self.lost = self.loop.create_future()

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        pending = self.pending
        while True:
            try:
                reply = self.parser.gets()
            except hiredis.ProtocolError as exc:
                self.fail(RespError(f"Redis sent something unreadable: {exc}"))
                return
            if reply is False:
                return
            if self.on_push is not None and type(reply) is list and reply and reply[0] in _PUSHES:
                self.on_push(reply)
                continue
            if not pending:
                self.fail(RespError("Redis sent a reply nobody asked for"))
                return
            future, _ = pending.popleft()
            if isinstance(reply, hiredis.ReplyError):
                message = str(reply)
                no_script = message.startswith("NOSCRIPT")
                if no_script:
                    self.scripts.clear()  # even if its caller was cancelled: see evalsha
                if not future.done():  # else its caller was cancelled
                    future.set_exception(NoScript(message) if no_script else RespError(message))
            elif not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_pending(RespError("Redis closed the connection"))
        self._mark_lost()

    def _mark_lost(self) -> None:
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)

    def call(self, payload: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        assert self.transport is not None
        future = loop.create_future()
        self.pending.append((future, loop.time()))
        self.transport.write(payload)
        return future

    def fail(self, error: RespError) -> None:
        """Drop the connection: its state is unknown."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self._fail_pending(error)
        self._mark_lost()

    def _fail_pending(self, error: RespError) -> None:
        while self.pending:
            future, _ = self.pending.popleft()
            if not future.done():
                future.set_exception(error)


class RespClient:
    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._conn: _Connection | None = None
        self._connecting: asyncio.Lock | None = None
        self._timer: asyncio.TimerHandle | None = None
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        self._unix = parts.path if parts.scheme == "unix" else None
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._ssl = ssl.create_default_context() if parts.scheme == "rediss" else None
        self._password = unquote(parts.password) if parts.password else None
        self._username = unquote(parts.username) if parts.username else None
        db = query.get("db", [""])[0]
        if not db and parts.scheme != "unix" and parts.path.strip("/"):
            db = parts.path.strip("/")
        self._db = int(db or 0)

    async def call(self, *args: Any) -> Any:
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        loop = conn.loop
        future = conn.call(encode(args), loop)
        if self._timer is None:
            self._timer = loop.call_later(self.timeout_s, self._check_timeouts)
        return await future

    def _check_timeouts(self) -> None:
        # One timer per client, re-armed while calls are waiting, instead of one per call.
        self._timer = None
        conn = self._conn
        if conn is None or not conn.pending:
            return
        loop = conn.loop
        due = conn.pending[0][1] + self.timeout_s
        if loop.time() >= due - 0.001:
            conn.fail(RespError(f"Redis did not answer within {self.timeout_s:g} s"))
            return
        self._timer = loop.call_at(due, self._check_timeouts)

    async def _connection(self) -> _Connection:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # one connect for all callers that found none
            conn = self._conn
            if conn is not None and not conn.closed:
                return conn
            try:
                async with asyncio.timeout(self.timeout_s):
                    conn = await self._connect()
            except (TimeoutError, OSError) as exc:
                raise RespError(f"Redis unreachable: {exc.__class__.__name__}: {exc}") from None
            self._conn = conn
            return conn

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn: _Connection
        if self._unix is not None:
            _, conn = await loop.create_unix_connection(_Connection, self._unix)
        else:
            _, conn = await loop.create_connection(
                _Connection, self._host, self._port, ssl=self._ssl
            )
        try:
            if self._password is not None:
                if self._username:
                    auth: tuple[str, ...] = ("AUTH", self._username, self._password)
                else:
                    auth = ("AUTH", self._password)
                await conn.call(encode(auth), loop)
            if self._db:
                await conn.call(encode(("SELECT", self._db)), loop)
        except BaseException:
            conn.fail(RespError("connection set-up failed"))
            raise
        return conn

    async def subscribe(self, pattern: str, on_push: Callable[[list[Any]], None]) -> _Connection:
        """A connection of its own, subscribed to `pattern`: each message published to a
        matching channel goes to `on_push` as [b"pmessage", pattern, channel, data]. Calls on
        it (PING) still get their replies; `lost` resolves when it closes."""
        async with asyncio.timeout(self.timeout_s):
            conn = await self._connect()
        conn.on_push = on_push
        try:
            async with asyncio.timeout(self.timeout_s):
                await conn.call(encode(("PSUBSCRIBE", pattern)), conn.loop)
        except BaseException:
            conn.fail(RespError("subscription failed"))
            raise
        return conn

    async def evalsha(self, sha: str, script: str, keys: list[str], args: list[Any]) -> Any:
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        if sha not in conn.scripts:
            # Loaded in the same write as the call, on a new connection (Redis may have
            # restarted without its scripts) and after any NOSCRIPT. Loading only after this
            # call's own NOSCRIPT is not enough: a caller cancelled once its call is written
            # never reads that reply, and the gateway's closing call often is (its server
            # reports the end of an answer as a disconnect). After a Redis restart no
            # release then ran again: every slot leaked until its lease lapsed.
            conn.scripts.add(sha)
            conn.call(encode(("SCRIPT", "LOAD", script)), conn.loop).add_done_callback(_unread)
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except NoScript:
            # Redis restarted (or SCRIPT FLUSH): load it and try once more.
            await self.call("SCRIPT", "LOAD", script)
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._conn is not None:
            self._conn.fail(RespError("client closed"))
            self._conn = None


def _unread(future: asyncio.Future[Any]) -> None:
    """A reply nobody awaits: an error in it is read here, not reported as never retrieved
    (the call after it meets the same problem and says so)."""
    if not future.cancelled():
        future.exception()
