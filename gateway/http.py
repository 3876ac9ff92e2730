"""Small ASGI helpers for the data plane: reading bodies, sending responses and errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from gateway.errors import NOT_RETRYABLE, GatewayError

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Headers = list[tuple[bytes, bytes]]

JSON = (b"content-type", b"application/json")
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx must not buffer a stream
]


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


def header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def header_values(scope: dict[str, Any], name: bytes) -> list[bytes]:
    """Every value of a header the request may repeat."""
    return [bytes(value) for key, value in scope["headers"] if key == name]


async def read_body(scope: dict[str, Any], receive: Receive, limit: int) -> bytes:
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def encode_headers(extra: dict[str, str] | Iterable[tuple[str, str]]) -> Headers:
    items = extra.items() if isinstance(extra, dict) else extra
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in items]


async def send_response(send: Send, status: int, body: bytes, headers: Headers) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def error_headers(error: GatewayError, base: Headers) -> Headers:
    headers = [JSON, *base, *encode_headers(error.headers)]
    if error.status in NOT_RETRYABLE and "x-should-retry" not in error.headers:
        headers.append((b"x-should-retry", b"false"))
    return headers


async def send_error(send: Send, error: GatewayError, base: Headers) -> None:
    await send_response(send, error.status, error.body(), error_headers(error, base))
