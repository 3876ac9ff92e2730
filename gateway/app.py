"""The data plane as a plain ASGI application, routed ahead of Django in asgi.py: no
middleware, no ORM, no thread hop per request (docs/architecture.md, "Measured facts that
shaped the hot path")."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from django.conf import settings
from redis.exceptions import RedisError

from clawdbot_site import memory
from gateway import metrics, response_cache
from gateway.auth import authenticate
from gateway.degraded import answer_instead, keep_answer
from gateway.endpoints import GENERATION_ENDPOINTS, prepare
from gateway.errors import (
    GatewayError,
    model_not_found,
    server_error,
    upstream_unavailable,
)
from gateway.exchange import Exchange
from gateway.http import (
    JSON,
    BodyTooLarge,
    ClientGone,
    Receive,
    Send,
    header,
    header_values,
    read_body,
    send_error,
    send_response,
)
from gateway.proxy import Proxy
from gateway.records import close_exchange
from gateway.runtime import Runtime, get_runtime
from gateway.snapshot import Snapshot
from gateway.sso import Caller
from gateway.tiers import Tier
from gateway.upstreams.contract import UpstreamCall
from gateway.validation import parse_body

log = logging.getLogger(__name__)
WATCH_AFTER_S = 0.02
# A request whose body was this large gives the freed memory back when it ends (see
# clawdbot_site/memory.py: a burst of large bodies otherwise leaves the process larger).
TRIM_AFTER_BYTES = 1024 * 1024


def owns(path: str) -> bool:
    """Paths the data plane answers; everything else goes to Django (including the
    management API under /v1/admin/, which needs the ORM and sessions)."""
    if path.startswith("/v1/admin/"):
        return False
    return path.startswith("/v1/") or path in ("/v1", "/healthz", "/readyz", "/metrics")


def _is_api(path: str) -> bool:
    """/v1 requests are logged and counted; the probes (/healthz, /readyz, /metrics) are not."""
    return path == "/v1" or path.startswith("/v1/")


def _endpoint(path: str) -> str:
    """The request log's name for the endpoint of a /v1 path."""
    if path == "/v1/models" or path.startswith("/v1/models/"):
        return "models"
    return GENERATION_ENDPOINTS.get(path, "unknown")


class GatewayApp:
    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/healthz":
            await send_response(send, 200, b'{"status":"ok"}', [JSON])
            return
        try:
            body = await read_body(scope, receive, settings.CLAWDBOT_MAX_BODY_BYTES)
        except ClientGone:
            if _is_api(path):
                await self.record(scope, Exchange(endpoint=_endpoint(path), status=499))
            return
        except BodyTooLarge:
            limit = settings.CLAWDBOT_MAX_BODY_BYTES
            error = GatewayError(
                413,
                f"Request body too large: the limit is {limit} bytes.",
                "invalid_request_error",
                "request_too_large",
            )
            if _is_api(path):
                await self.refuse(scope, _endpoint(path), error, send)
            else:
                await send_error(send, error, [])
            memory.trim()  # up to the limit was read, and is free now
            return
        large = len(body) >= TRIM_AFTER_BYTES
        try:
            await self._serve_until_client_leaves(scope, path, method, body, receive, send)
        finally:
            if large:
                del body  # before the trim, or the body itself would stay
                memory.trim()

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

        Channels would not deliver `http.disconnect` while the handler awaits
        (docs/architecture.md), so a watcher task reads it. Most requests finish in a few
        milliseconds, so the watcher is only started once a request has run for
        WATCH_AFTER_S: a task per request costs."""
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
        if path.endswith("/") and len(path) > len("/v1/"):
            path = path[:-1]  # /v1/models/ is the list, as /v1/models
        endpoint = GENERATION_ENDPOINTS.get(path)
        if endpoint is not None:
            if method != "POST":
                await self.refuse(scope, endpoint, _method_not_allowed(method, path, "POST"), send)
                return
            await self.generation(scope, endpoint, body, send)
            return
        if path == "/v1/models" or path.startswith("/v1/models/"):
            if method != "GET":
                await self.refuse(scope, "models", _method_not_allowed(method, path, "GET"), send)
                return
            await self.models(scope, path, send)
            return
        if path == "/readyz":
            await self.readyz(send)
            return
        if path == "/metrics":
            await self.metrics(send)
            return
        error = GatewayError(
            404, f"Unknown request URL: {method} {path}.", "invalid_request_error", "not_found"
        )
        await self.refuse(scope, "unknown", error, send)

    async def refuse(
        self, scope: dict[str, Any], endpoint: str, error: GatewayError, send: Send
    ) -> None:
        """Answer a /v1 request stopped before any handler (wrong method, unknown URL, body
        too large), and record it like any other."""
        ex = Exchange(endpoint=endpoint, status=error.status, error=error)
        await send_error(send, error, ex.base_headers())
        await self.record(scope, ex)

    async def record(self, scope: dict[str, Any], ex: Exchange) -> None:
        """The closing bookkeeping of a request that never reached the proxy: it holds no
        lease, so the closing script only records its metrics and request-log entry."""
        try:
            rt = await get_runtime()
        except Exception as exc:
            log.warning("%s: not recorded, no routing snapshot: %s", ex.request_id, exc)
            return
        if ex.key is None:
            ex.key = await _valid_key(scope, rt)
        await close_exchange(rt, ex)

    async def generation(
        self, scope: dict[str, Any], endpoint: str, body: bytes, send: Send
    ) -> None:
        ex = Exchange(endpoint=endpoint)
        rt: Runtime | None = None
        call: UpstreamCall | None = None
        try:
            rt = await get_runtime()
            snapshot = rt.snapshot
            ex.key = await authenticate(
                header(scope, b"authorization"), snapshot, settings.SECRET_KEY, rt.tokens
            )
            payload = parse_body(body)
            session = header(scope, b"x-clawdbot-session")
            if session:
                # Pins the conversation (gateway.prefixes); clipped, it is only hashed.
                ex.session = session[:256].decode("latin-1")
            degradation = rt.degradation
            call = prepare(
                endpoint, payload, snapshot, ex, downgrade=degradation.tier >= Tier.DOWNGRADE
            )
            if degradation.warm and not ex.stream and endpoint in response_cache.ENDPOINTS:
                ex.keep_answer = not response_cache.no_store(header_values(scope, b"cache-control"))
            proxy = Proxy(rt, send)
            try:
                await proxy.run(ex, snapshot.routable(ex.served_model), call)
            except GatewayError as error:
                error.__traceback__ = None  # see below; it may become another error's context
                # In a degradation tier, a request the cluster failed may get another answer.
                await answer_instead(rt, proxy, ex, endpoint, call, error)
        except GatewayError as error:
            # Kept on the exchange, its traceback would hold this frame and, through it, the
            # request's body until a garbage collection: let the body go with the request.
            error.__traceback__ = None
            ex.status, ex.error = error.status, error
            if ex.response_started:
                await _end_stream_with(send, error)
            else:
                await send_error(send, error, ex.base_headers())
        except asyncio.CancelledError:
            ex.status = 499  # client closed the request (nginx's code)
            raise
        except Exception as exc:
            if rt is None:  # the routing snapshot could not be loaded
                failure = _config_unavailable(ex.request_id, exc)
            else:
                log.exception("%s: unexpected error", ex.request_id)
                failure = server_error()
            ex.status, ex.error = failure.status, failure
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
                    if ex.answer is not None and call is not None:
                        await keep_answer(rt, ex, endpoint, call)  # after the answer went out

    async def models(self, scope: dict[str, Any], path: str, send: Send) -> None:
        ex = Exchange(endpoint="models")
        try:
            rt = await get_runtime()
        except Exception as exc:
            await send_error(send, _config_unavailable(ex.request_id, exc), ex.base_headers())
            return
        try:
            key = await authenticate(
                header(scope, b"authorization"), rt.snapshot, settings.SECRET_KEY, rt.tokens
            )
            ex.key = key
            body = _models_answer(rt.snapshot, key, path, ex)
        except GatewayError as error:
            error.__traceback__ = None  # see generation
            ex.status, ex.error = error.status, error
            await send_error(send, error, ex.base_headers())
        except Exception:
            log.exception("%s: unexpected error", ex.request_id)
            ex.status, ex.error = 500, server_error()
            await send_error(send, ex.error, ex.base_headers())
        else:
            await send_response(send, 200, body, [JSON, *ex.base_headers()])
        await close_exchange(rt, ex)

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
            # The degradation tier this process acts on, as of its last tick; not a problem.
            degradation = rt.degradation
            body["tier"] = int(degradation.tier)
            body["error_rate"] = round(degradation.window.rate, 4)
            body["window_requests"] = degradation.window.requests
        await send_response(send, 503 if problems else 200, orjson.dumps(body), [JSON])

    async def metrics(self, send: Send) -> None:
        """Prometheus text, or a 503 in the OpenAI error shape: never the server's own 500."""
        try:
            rt = await get_runtime()
        except Exception as exc:
            await send_error(send, _config_unavailable("/metrics", exc), [])
            return
        try:
            data = await metrics.fetch(rt.redis, rt.snapshot, int(time.time() * 1000))
            body = metrics.render(data)
        except (RedisError, OSError) as exc:
            log.warning("metrics unavailable: %s", exc)
            error = upstream_unavailable("Metrics are unavailable: Redis unreachable.", 2)
        except Exception:
            log.exception("metrics could not be rendered")
            error = upstream_unavailable(
                "Metrics could not be rendered; the gateway's log says why.", 5
            )
        else:
            await send_response(send, 200, body, [(b"content-type", metrics.CONTENT_TYPE)])
            return
        await send_error(send, error, [])


def _config_unavailable(request_id: str, exc: Exception) -> GatewayError:
    """The answer while the routing snapshot cannot be loaded: the database was unreachable
    when this process started (once loaded, a snapshot is kept through outages)."""
    log.warning("%s: the routing snapshot cannot be loaded: %s", request_id, exc)
    return upstream_unavailable(
        "The gateway cannot load its configuration (is its database reachable?); "
        "try again shortly.",
        5,
    )


async def _valid_key(scope: dict[str, Any], rt: Runtime) -> Caller | None:
    """The request's key or token if it is valid, so the log says who sent a refused
    request."""
    try:
        return await authenticate(
            header(scope, b"authorization"), rt.snapshot, settings.SECRET_KEY, rt.tokens
        )
    except GatewayError:
        return None


def _models_answer(snapshot: Snapshot, key: Caller, path: str, ex: Exchange) -> bytes:
    """The model list or one model's card: only models the key may use."""
    cards = {
        p.model_id: _model_card(p) for p in snapshot.profiles.values() if key.may_use(p.model_id)
    }
    if path == "/v1/models":
        return orjson.dumps({"object": "list", "data": [cards[m] for m in sorted(cards)]})
    ex.model = path.removeprefix("/v1/models/")
    card = cards.get(ex.model)
    if card is None:
        raise model_not_found(ex.model)
    ex.served_model = ex.model
    return orjson.dumps(card)


def _model_card(profile: Any) -> dict[str, Any]:
    return {
        "id": profile.model_id,
        "object": "model",
        "created": profile.created,
        "owned_by": "clawdbot",
        "context_window": profile.context_window,
        "max_output_tokens": profile.max_output_tokens,
    }


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _method_not_allowed(method: str, path: str, allowed: str) -> GatewayError:
    return GatewayError(
        405,
        f"Method {method} is not allowed on {path}; use {allowed}.",
        "invalid_request_error",
        "method_not_allowed",
        None,
        {"allow": allowed},
    )


async def _end_stream_with(send: Send, error: GatewayError) -> None:
    await send({"type": "http.response.body", "body": error.sse_event(), "more_body": False})
