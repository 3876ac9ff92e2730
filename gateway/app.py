"""The data plane as a plain ASGI application, routed ahead of Django in asgi.py: no
middleware, no ORM, no thread hop per request (see DESIGN.md, "Measured facts")."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from django.conf import settings
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway import metrics
from gateway.auth import authenticate
from gateway.endpoints import GENERATION_ENDPOINTS, prepare
from gateway.errors import GatewayError, bad_request, model_not_found, server_error
from gateway.http import (
    JSON,
    BodyTooLarge,
    ClientGone,
    Receive,
    Send,
    header,
    read_body,
    send_error,
    send_response,
)
from gateway.proxy import Exchange, Proxy
from gateway.records import close_exchange
from gateway.runtime import Runtime, get_runtime

log = logging.getLogger(__name__)
WATCH_AFTER_S = 0.02


def owns(path: str) -> bool:
    """Paths the data plane answers; everything else goes to Django (including the
    management API under /v1/admin/, which needs the ORM and sessions)."""
    if path.startswith("/v1/admin/"):
        return False
    return path.startswith("/v1/") or path in ("/v1", "/healthz", "/readyz", "/metrics")


class GatewayApp:
    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/healthz":
            await send_response(send, 200, b'{"status":"ok"}', [JSON])
            return
        try:
            body = await read_body(scope, receive, settings.CLAWDBOT_MAX_BODY_BYTES)
        except ClientGone:
            return
        except BodyTooLarge:
            limit = settings.CLAWDBOT_MAX_BODY_BYTES
            await send_error(
                send,
                GatewayError(
                    413,
                    f"Request body too large: the limit is {limit} bytes.",
                    "invalid_request_error",
                    "request_too_large",
                ),
                [],
            )
            return
        await self._serve_until_client_leaves(scope, path, method, body, receive, send)

    async def _serve_until_client_leaves(
        self,
        scope: dict[str, Any],
        path: str,
        method: str,
        body: bytes,
        receive: Receive,
        send: Send,
    ) -> None:
        """Run the request in this task; if the client disconnects, cancel it at once so the
        upstream call stops and the slot frees.

        Channels would not deliver `http.disconnect` while the handler awaits (DESIGN.md), so
        a watcher task reads it. Most requests finish in a few milliseconds, so the watcher is
        only started once a request has run for WATCH_AFTER_S: a task per request costs."""
        task = asyncio.current_task()
        assert task is not None
        state = {"gone": False, "finished": False}
        watcher: list[asyncio.Task[None]] = []

        def on_gone(fut: asyncio.Task[None]) -> None:
            if state["finished"] or fut.cancelled() or fut.exception() is not None:
                return
            state["gone"] = True
            task.cancel()

        def watch() -> None:
            watcher.append(asyncio.ensure_future(_wait_disconnect(receive)))
            watcher[0].add_done_callback(on_gone)

        timer = task.get_loop().call_later(WATCH_AFTER_S, watch)
        try:
            await self.dispatch(scope, path, method, body, send)
        except asyncio.CancelledError:
            if not state["gone"]:
                raise
            task.uncancel()  # the client left; this request ends quietly
        finally:
            state["finished"] = True
            timer.cancel()
            for w in watcher:
                w.cancel()

    async def dispatch(
        self, scope: dict[str, Any], path: str, method: str, body: bytes, send: Send
    ) -> None:
        endpoint = GENERATION_ENDPOINTS.get(path)
        if endpoint is not None:
            if method != "POST":
                await _method_not_allowed(send, method, path, "POST")
                return
            await self.generation(scope, endpoint, body, send)
            return
        if path == "/v1/models" or path.startswith("/v1/models/"):
            if method != "GET":
                await _method_not_allowed(send, method, path, "GET")
                return
            await self.models(scope, path, send)
            return
        if path == "/readyz":
            await self.readyz(send)
            return
        if path == "/metrics":
            await self.metrics(send)
            return
        await send_error(
            send,
            GatewayError(
                404, f"Unknown request URL: {method} {path}.", "invalid_request_error", "not_found"
            ),
            [],
        )

    async def generation(
        self, scope: dict[str, Any], endpoint: str, body: bytes, send: Send
    ) -> None:
        ex = Exchange(endpoint=endpoint)
        rt: Runtime | None = None
        try:
            rt = await get_runtime()
            snapshot = rt.snapshot
            ex.key = authenticate(header(scope, b"authorization"), snapshot, settings.SECRET_KEY)
            payload = _parse_json(body)
            request = prepare(endpoint, payload, snapshot, ex)
            await Proxy(rt, send).run(ex, snapshot.routable(ex.served_model), request)
        except GatewayError as error:
            ex.status, ex.error = error.status, error
            if ex.response_started:
                await _end_stream_with(send, error)
            else:
                await send_error(send, error, ex.base_headers())
        except asyncio.CancelledError:
            ex.status = 499  # client closed the request (nginx's code)
            raise
        except Exception:
            log.exception("%s: unexpected error", ex.request_id)
            failure = server_error()
            ex.status, ex.error = 500, failure
            if ex.response_started:
                await _end_stream_with(send, failure)
            else:
                await send_error(send, failure, ex.base_headers())
        finally:
            if rt is not None:
                if ex.status == 499:  # being cancelled: finish the bookkeeping regardless
                    await asyncio.shield(close_exchange(rt, ex))
                else:
                    # No task per request: with the Redis connection up, the closing script
                    # is written before the first await, so a late cancel cannot lose it.
                    await close_exchange(rt, ex)

    async def models(self, scope: dict[str, Any], path: str, send: Send) -> None:
        try:
            rt = await get_runtime()
            key = authenticate(header(scope, b"authorization"), rt.snapshot, settings.SECRET_KEY)
        except GatewayError as error:
            await send_error(send, error, [])
            return
        visible = [p for p in rt.snapshot.profiles.values() if key.may_use(p.model_id)]
        cards = {p.model_id: _model_card(p) for p in visible}
        if path == "/v1/models":
            listing = {"object": "list", "data": [cards[m] for m in sorted(cards)]}
            await send_response(send, 200, orjson.dumps(listing), [JSON])
            return
        model_id = path.removeprefix("/v1/models/")
        card = cards.get(model_id)
        if card is None:
            await send_error(send, model_not_found(model_id), [])
            return
        await send_response(send, 200, orjson.dumps(card), [JSON])

    async def readyz(self, send: Send) -> None:
        problems = []
        try:
            rt = await get_runtime()
        except Exception as exc:
            problems.append(f"routing snapshot not loaded: {exc.__class__.__name__}")
            rt = None
        if rt is not None:
            try:
                await asyncio.wait_for(rt.redis.ping(), timeout=1.0)
            except Exception:
                problems.append("Redis unreachable")
            if rt.snapshot.ready_nodes == 0:
                problems.append("no READY node")
        body: dict[str, Any] = {
            "status": "ready" if not problems else "not ready",
            "problems": problems,
        }
        if rt is not None:
            body["snapshot_version"] = rt.snapshot.version
            body["ready_nodes"] = rt.snapshot.ready_nodes
        await send_response(send, 503 if problems else 200, orjson.dumps(body), [JSON])

    async def metrics(self, send: Send) -> None:
        rt = await get_runtime()
        try:
            data = await metrics.fetch(rt.redis, rt.snapshot, int(time.time() * 1000))
        except Exception as exc:
            log.warning("metrics unavailable: %s", exc)
            error = GatewayError(503, "Metrics are unavailable: Redis unreachable.", "server_error")
            await send_error(send, error, [])
            return
        registry = CollectorRegistry()
        registry.register(metrics.RedisCollector(data))
        await send_response(
            send, 200, generate_latest(registry), [(b"content-type", CONTENT_TYPE_LATEST.encode())]
        )


def _model_card(profile: Any) -> dict[str, Any]:
    return {
        "id": profile.model_id,
        "object": "model",
        "created": profile.created,
        "owned_by": "clawdbot",
        "context_window": profile.context_window,
        "max_output_tokens": profile.max_output_tokens,
    }


def _parse_json(body: bytes) -> Any:
    if not body.strip():
        raise bad_request("The request body is empty; send a JSON object.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.") from None


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _method_not_allowed(send: Send, method: str, path: str, allowed: str) -> None:
    error = GatewayError(
        405,
        f"Method {method} is not allowed on {path}; use {allowed}.",
        "invalid_request_error",
        "method_not_allowed",
        None,
        {"allow": allowed},
    )
    await send_error(send, error, [])


async def _end_stream_with(send: Send, error: GatewayError) -> None:
    await send({"type": "http.response.body", "body": error.sse_event(), "more_body": False})
