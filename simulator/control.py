"""Test and benchmark hooks: the middleware every API request passes through (recording,
the ``hang`` fault, in-flight and status counters), the simulated-node header, and the
``/_sim`` endpoints, served on the main port and on the control port."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from simulator.engine import ControlError, apply_control
from simulator.replies import json_response
from simulator.state import BODY, REQUEST_RING_SIZE, STATE, BadBody

SIMULATED_HEADER = "X-Clawdbot-Simulated"


@web.middleware
async def observe(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Record every non-control request, apply ``hang``, count statuses and in-flight."""
    if request.path.startswith("/_sim/"):
        return await handler(request)
    state = request.app[STATE]
    body: object = None
    if request.body_exists:
        raw = await request.read()
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                body = BadBody(f"invalid JSON body: {exc}")
    request[BODY] = body
    state.record(request, body)
    state.requests_by_path[request.path] += 1
    state.in_flight += 1
    try:
        if not state.hang_released.is_set():
            await state.hang_released.wait()
        response = await handler(request)
        state.responses_by_status[response.status] += 1
        return response
    except web.HTTPException as exc:
        state.responses_by_status[exc.status] += 1
        raise
    finally:
        state.in_flight -= 1


async def mark_simulated(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[SIMULATED_HEADER] = "1"


async def control_get(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].control_view())


async def control_post(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        payload = orjson.loads(await request.read() or b"{}")
        faults = apply_control(state.faults, payload, baseline_speed=state.config.speed)
    except orjson.JSONDecodeError as exc:
        return json_response({"error": f"invalid JSON body: {exc}"}, 400)
    except ControlError as exc:
        return json_response({"error": str(exc)}, 400)
    try:
        await state.set_faults(faults)
    except OSError as exc:
        return json_response({"error": f"could not reopen the main port: {exc}"}, 500)
    return json_response(state.control_view())


async def stats_get(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].stats())


async def requests_get(request: web.Request) -> web.Response:
    raw = request.query.get("limit", str(REQUEST_RING_SIZE))
    try:
        limit = int(raw)
    except ValueError:
        limit = -1
    if limit < 0:
        return json_response({"error": "limit must be a non-negative integer"}, 400)
    return json_response({"requests": request.app[STATE].recorded(limit)})


async def requests_clear(request: web.Request) -> web.Response:
    request.app[STATE].requests.clear()
    return json_response({"cleared": True})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/_sim/control", control_get)
    app.router.add_post("/_sim/control", control_post)
    app.router.add_get("/_sim/stats", stats_get)
    app.router.add_get("/_sim/requests", requests_get)
    app.router.add_post("/_sim/requests/clear", requests_clear)
