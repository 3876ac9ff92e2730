"""What both APIs put on the wire alike: JSON bodies, SSE events, the request body the
middleware parsed, stop sequences, the shared error messages and the mid-stream drop fault."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from simulator.state import BODY, BadBody, SimState

BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
INJECTED_ERROR = "simulated failure (error_rate)"
MID_STREAM_ERROR = "simulated failure: the runner stopped mid-stream"
SSE_DONE = b"data: [DONE]\n\n"


def json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def sse_event(data: object) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def request_body(request: web.Request) -> dict[str, Any] | str:
    """The JSON object the middleware parsed, or the message for a 400."""
    body = request.get(BODY)
    if body is None:
        return "missing request body"
    if isinstance(body, BadBody):
        return body.message
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    return body


def stop_sequences(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(s for s in value if isinstance(s, str))
    return ()


async def maybe_drop(
    request: web.Request,
    state: SimState,
    response: web.StreamResponse,
    emitted: int,
    error_tail: bytes,
) -> bool:
    """Apply the drop-mid-stream fault: cut the connection, or end with the API's own error
    ending (`error_tail`)."""
    drop_after = state.faults.drop_mid_stream_after
    if drop_after is None or emitted < drop_after:
        return False
    if not await drop(request, state):
        await response.write(error_tail)
        await response.write_eof()
    return True


async def drop(request: web.Request, state: SimState) -> bool:
    """Count a drop-mid-stream fault that fires; in abrupt mode also cut the connection, and
    say so, since then nothing more can be written."""
    state.dropped_streams += 1
    if state.faults.drop_mode != "abrupt":
        return False
    await _abort_connection(request)
    return True


async def _abort_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()
