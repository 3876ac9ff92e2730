"""Running one generation request against the cluster: admission (rate limits, slot or
queue), the upstream call, retries on another node before the first byte reaches the client,
streaming relay, and the closing bookkeeping (lease, ejection, metrics, request log) in one
Redis pipeline."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings
from redis.exceptions import RedisError

from gateway.admission import Verdict
from gateway.errors import GatewayError, upstream_unavailable
from gateway.http import JSON, SSE_HEADERS, Headers, Send, encode_headers
from gateway.ids import new_id
from gateway.queue_signals import Place
from gateway.runtime import Runtime
from gateway.snapshot import KeyView, NodeView, Route
from gateway.upstreams.adapters import NotAnAnswer
from wire.http_client import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)
from wire.resp import RespError

log = logging.getLogger(__name__)

POLL_MAX_S = 0.25  # longest wait between a queued request's admission calls
POLL_MAX_UNSIGNALLED_S = 0.05  # the same without wake-ups, or with other nodes to watch

# Failures worth another node: the node, not the request, is at fault.
RETRYABLE_EXCEPTIONS = (UpstreamError,)
# Node answers that say the same: its credentials or its model setup are wrong (the gateway
# only routes a model to nodes meant to serve it), it timed the request out, or it is busy.
NODE_FAULT_STATUSES = frozenset({401, 403, 404, 408, 429})
NOT_FAILING_STATUSES = frozenset({404, 429})  # retried, but no step towards ejection


def _node_at_fault(status: int) -> bool:
    return status >= 500 or status in NODE_FAULT_STATUSES


def _node_retry(status: int, error: GatewayError) -> Retry:
    return Retry(error, "neutral" if status in NOT_FAILING_STATUSES else "fail")


class StreamRelay(Protocol):
    """Turns upstream stream bytes into client SSE bytes (see gateway.upstreams.adapters)."""

    @property
    def prompt_tokens(self) -> int | None: ...
    @property
    def completion_tokens(self) -> int | None: ...
    def feed(self, chunk: bytes) -> bytes: ...
    def finish(self) -> bytes: ...
    @property
    def failed(self) -> GatewayError | None: ...
    @property
    def streamed(self) -> int: ...  # events relayed so far, about a token each


class NodeCall(Protocol):
    """One request in one node's protocol (see gateway.upstreams.adapters)."""

    @property
    def path(self) -> str: ...
    @property
    def body(self) -> bytes: ...

    def translate(self, raw: bytes) -> tuple[bytes, int | None, int | None]: ...
    def relay(self) -> StreamRelay: ...
    def error(self, status: int, raw: bytes) -> GatewayError: ...


class UpstreamCall(Protocol):
    """A validated client request that can be sent to any node serving its profile."""

    def for_node(self, node: NodeView) -> NodeCall: ...


@dataclass
class Exchange:
    """Everything known about one client request, for the response, the log and metrics."""

    endpoint: str
    started: float = field(default_factory=time.perf_counter)
    wall: float = field(default_factory=time.time)
    request_id: str = field(default_factory=lambda: "req-" + new_id())
    key: KeyView | None = None
    model: str = ""
    served_model: str = ""
    stream: bool = False
    node: str = ""
    status: int = 200
    attempts: int = 0
    ttft: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    estimated_tokens: int = 0  # prompt plus requested output: the rate-limit reservation
    prompt_estimate: int = 0
    error: GatewayError | None = None
    response_started: bool = False
    content_sent: bool = False
    lease: str = ""
    lease_node: str = ""
    lease_queued: bool = False
    outcome: str = "neutral"
    headers: Headers = field(default_factory=list)
    truncated: bool = False

    def base_headers(self, *, with_node: bool = True) -> Headers:
        headers: Headers = [(b"x-request-id", self.request_id.encode())]
        if self.node and with_node:
            headers.append((b"x-clawdbot-node", self.node.encode()))
        if self.attempts > 1:
            headers.append((b"x-clawdbot-attempts", str(self.attempts).encode()))
        return headers + self.headers


class Retry(Exception):
    """This node failed before anything reached the client: try another one. `outcome` feeds
    ejection: "neutral" for a node that works but cannot take this request (busy, or without
    this model), which must not count against the node's other models."""

    def __init__(self, error: GatewayError, outcome: str = "fail") -> None:
        super().__init__(str(error))
        self.error = error
        self.outcome = outcome


def _rate_headers(key: KeyView, verdict: Verdict) -> Headers:
    headers = []
    if key.rpm_limit:
        headers += [
            ("x-ratelimit-limit-requests", str(key.rpm_limit)),
            ("x-ratelimit-remaining-requests", str(max(verdict.remaining_requests, 0))),
        ]
    if key.tpm_limit:
        headers += [
            ("x-ratelimit-limit-tokens", str(key.tpm_limit)),
            ("x-ratelimit-remaining-tokens", str(max(verdict.remaining_tokens, 0))),
        ]
    return encode_headers(headers)


def rate_limited(key: KeyView, verdict: Verdict) -> GatewayError:
    kind = "requests" if verdict.status == "rate_requests" else "tokens"
    limit = key.rpm_limit if kind == "requests" else key.tpm_limit
    if verdict.retry_after_ms == -2:
        return GatewayError(
            429,
            f"Request too large: it needs more tokens than this key's limit of {limit} "
            "tokens per minute allows. Shorten the prompt or max_tokens.",
            "tokens",
            "rate_limit_exceeded",
            None,
            {"x-should-retry": "false"},
        )
    seconds = max(1, math.ceil(verdict.retry_after_ms / 1000))
    headers = {
        "retry-after": str(min(seconds, 120)),
        "retry-after-ms": str(max(verdict.retry_after_ms, 1)),
        f"x-ratelimit-limit-{kind}": str(limit),
        f"x-ratelimit-remaining-{kind}": "0",
        f"x-ratelimit-reset-{kind}": f"{seconds}s",
    }
    if seconds > 120:
        headers["x-should-retry"] = "false"
    return GatewayError(
        429,
        f"Rate limit reached for this key: {limit} {kind} per minute. "
        f"Please try again in {seconds}s.",
        kind,
        "rate_limit_exceeded",
        None,
        headers,
    )


class Proxy:
    def __init__(self, rt: Runtime, send: Send) -> None:
        self.rt = rt
        self.send = send

    async def start_stream(self, ex: Exchange, *, with_node: bool = True) -> None:
        if not ex.response_started:
            ex.response_started = True
            await self.send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": SSE_HEADERS + ex.base_headers(with_node=with_node),
                }
            )

    async def comment(self, ex: Exchange, text: bytes) -> None:
        """An SSE comment (keep-alive) while no node has answered yet. Started by it, the
        stream's headers name no node: the one being tried may still fail and another
        answer (the request log records which one did)."""
        await self.start_stream(ex, with_node=False)
        await self.write(text)

    async def write(self, data: bytes) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def run(self, ex: Exchange, routes: tuple[Route, ...], call: UpstreamCall) -> None:
        if not routes:
            raise upstream_unavailable(
                f"No node is ready to serve `{ex.model}` right now; try again shortly.", 5
            )
        tried: set[str] = set()
        prefer = ""
        last: GatewayError | None = None
        for attempt in range(1, settings.CLAWDBOT_MAX_ATTEMPTS + 1):
            candidates = tuple(r for r in routes if r.node.name not in tried)
            if not candidates:
                break
            node = await self.acquire(ex, candidates, first=attempt == 1, prefer=prefer)
            ex.attempts = attempt
            ex.node = node.name
            try:
                node_call = call.for_node(node)
                if ex.stream:
                    await self.stream_once(ex, node, node_call)
                else:
                    await self.call_once(ex, node, node_call)
                return
            except Retry as retry:
                last = retry.error
                tried.add(node.name)
                prefer = node.gpu_type
                await self.release(ex, retry.outcome)
                log.info("attempt %d on %s failed: %s", attempt, node.name, retry.error.message)
        raise last or upstream_unavailable(f"No node could serve `{ex.model}`.")

    async def acquire(
        self, ex: Exchange, routes: tuple[Route, ...], *, first: bool, prefer: str
    ) -> NodeView:
        key = ex.key
        assert key is not None
        lease = new_id()
        verdict = await self._admit(
            lease=lease,
            routes=routes,
            key_id=key.id,
            rpm=key.rpm_limit,
            tpm=key.tpm_limit,
            estimated_tokens=ex.estimated_tokens,
            check_rate=first,
            prefer_gpu=prefer,
        )
        if verdict.status in ("rate_requests", "rate_tokens"):
            raise rate_limited(key, verdict)
        if first:
            ex.headers = _rate_headers(key, verdict)
        if verdict.status == "ejected":
            raise upstream_unavailable(
                f"Every node serving `{ex.model}` is failing; they are ejected for a cooldown.", 5
            )
        if verdict.status == "full":
            raise upstream_unavailable(
                f"All nodes serving `{ex.model}` are at capacity and their queues are full.", 1
            )
        ex.lease, ex.lease_node = lease, verdict.node
        ex.lease_queued = verdict.status == "queued"
        self.rt.leases[lease] = ("queue:" if ex.lease_queued else "slots:") + verdict.node
        if ex.lease_queued:
            verdict = await self.wait_in_queue(ex, routes, lease, prefer)
        return self.rt.snapshot.nodes.get(verdict.node) or next(
            r.node for r in routes if r.node.name == verdict.node
        )

    async def _admit(self, *, lease: str, routes: tuple[Route, ...], **kwargs: Any) -> Verdict:
        try:
            return await self.rt.admission.admit(lease=lease, routes=routes, **kwargs)
        except asyncio.CancelledError:
            # The client left while the call was in flight: its reply, which may grant a slot
            # or a place in a queue, is dropped unread. Take the lease out of wherever it may
            # have gone (sent after it on the same connection, so run after it), instead of
            # leaving a slot taken until the lease lapses.
            nodes = [route.node.name for route in routes]
            try:
                await asyncio.shield(self.rt.admission.forget(lease, nodes))
            except Exception as exc:  # Redis gone too: the lease lapses by itself
                log.warning("could not free lease %s: %s", lease, exc)
            raise
        except (RespError, RedisError) as exc:
            log.warning("admission failed: %s", exc)
            raise upstream_unavailable(
                "The gateway cannot reach Redis, where admission state is shared; "
                "try again shortly.",
                2,
            ) from None

    async def wait_in_queue(
        self, ex: Exchange, routes: tuple[Route, ...], lease: str, prefer: str
    ) -> Verdict:
        signals = self.rt.signals
        place = signals.enter(ex.lease_node)
        try:
            return await self._wait_for_slot(ex, routes, lease, prefer, place)
        finally:
            signals.leave(place)

    async def _wait_for_slot(
        self, ex: Exchange, routes: tuple[Route, ...], lease: str, prefer: str, place: Place
    ) -> Verdict:
        deadline = time.monotonic() + settings.CLAWDBOT_QUEUE_TIMEOUT_S
        next_ping = time.monotonic() + settings.CLAWDBOT_KEEPALIVE_S
        delay = 0.005
        signals = self.rt.signals
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise upstream_unavailable(
                    f"Timed out after {settings.CLAWDBOT_QUEUE_TIMEOUT_S:g} s waiting for a "
                    f"free slot on a node serving `{ex.model}`.",
                    2,
                )
            if ex.stream and now >= next_ping:
                await self.comment(ex, b": queued, waiting for a free slot\n\n")
                next_ping = now + settings.CLAWDBOT_KEEPALIVE_S
            # Woken when a slot frees on the node (queue_signals), or poll: a slot can also
            # free without notice (a lapsed lease, a lost message, another node).
            until = min(deadline, next_ping) if ex.stream else deadline
            await signals.wait(place, max(0.001, min(delay, until - now)))
            # Wake-ups come only from the node it queued on: a request that could also run on
            # other nodes keeps polling often enough to notice their slots freeing.
            slow = len(routes) == 1 and signals.subscribed.is_set()
            delay = min(delay * 2, POLL_MAX_S if slow else POLL_MAX_UNSIGNALLED_S)
            verdict = await self._admit(
                lease=lease,
                routes=routes,
                key_id=None,
                rpm=None,
                tpm=None,
                estimated_tokens=0,
                check_rate=False,
                queued_at=ex.lease_node,
                prefer_gpu=prefer,
            )
            signals.polled(place)
            if verdict.status == "ok":
                self.rt.leases[lease] = "slots:" + verdict.node
                ex.lease_node, ex.lease_queued = verdict.node, False
                return verdict

    async def release(self, ex: Exchange, outcome: str) -> None:
        """Free the lease now (between attempts). The final release rides the closing pipeline."""
        if not ex.lease:
            return
        lease, node, queued = ex.lease, ex.lease_node, ex.lease_queued
        ex.lease = ""
        self.rt.leases.pop(lease, None)
        await asyncio.shield(
            self.rt.admission.release(lease=lease, node=node, outcome=outcome, queued=queued)
        )

    async def call_once(self, ex: Exchange, node: NodeView, call: NodeCall) -> None:
        try:
            response = await self.rt.http.post(node.base_url, call.path, call.body)
            try:
                raw = await response.read()
            finally:
                response.close()
        except RETRYABLE_EXCEPTIONS as exc:
            raise Retry(_transport_error(node, exc)) from None
        if response.status != 200:
            error = call.error(response.status, raw)
            if _node_at_fault(response.status):
                raise _node_retry(response.status, error)
            ex.outcome = "ok"  # the node answered; the request was at fault
            raise error
        try:
            body, ex.prompt_tokens, ex.completion_tokens = call.translate(raw)
        except NotAnAnswer as error:
            raise Retry(error) from None
        ex.outcome = "ok"
        ex.ttft = time.perf_counter() - ex.started
        headers = [JSON, *ex.base_headers()]
        if self._truncated(ex):
            headers.append((b"x-clawdbot-prompt-truncated", b"true"))
        ex.response_started = ex.content_sent = True
        await self.send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*headers, (b"content-length", str(len(body)).encode())],
            }
        )
        await self.send({"type": "http.response.body", "body": body})

    def _truncated(self, ex: Exchange) -> bool:
        """A prompt count far below our estimate means the node cut the prompt silently. A
        count the node left out is unknown, not zero (Ollama omits it for some cached
        prompts: PROTOCOLS.md)."""
        if ex.prompt_tokens is None or ex.prompt_estimate < 32:
            return False
        if ex.prompt_tokens < ex.prompt_estimate * settings.CLAWDBOT_TRUNCATION_RATIO:
            ex.truncated = True
            log.warning(
                "%s: node %s evaluated %d prompt tokens, estimated %d: prompt truncated?",
                ex.request_id,
                ex.node,
                ex.prompt_tokens,
                ex.prompt_estimate,
            )
            return True
        return False

    async def stream_once(self, ex: Exchange, node: NodeView, call: NodeCall) -> None:
        async def keep_alive() -> None:
            # Ollama sends its status line only with the first token: keep the client's
            # connection alive through the prefill (comments are not content: a failure
            # before the first token still goes to another node).
            await self.comment(ex, b": keep-alive\n\n")

        try:
            response = await self.rt.http.post(
                node.base_url, call.path, call.body, settings.CLAWDBOT_KEEPALIVE_S, keep_alive
            )
        except RETRYABLE_EXCEPTIONS as exc:
            raise Retry(_transport_error(node, exc)) from None
        try:
            if response.status != 200:
                try:
                    raw = await response.read()
                except RETRYABLE_EXCEPTIONS as exc:
                    raise Retry(_transport_error(node, exc)) from None
                error = call.error(response.status, raw)
                if _node_at_fault(response.status):
                    raise _node_retry(response.status, error)
                ex.outcome = "ok"
                raise error
            await self._relay(ex, node, response, call.relay())
        finally:
            response.close()

    async def _relay(
        self, ex: Exchange, node: NodeView, response: UpstreamResponse, relay: StreamRelay
    ) -> None:
        keepalive = settings.CLAWDBOT_KEEPALIVE_S
        pending: asyncio.Task[bytes] | None = None
        try:
            while True:
                if not ex.content_sent:
                    # Before the first content byte: keep the client's connection alive
                    # through a slow prefill, and a failure is still worth another node.
                    pending = pending or asyncio.ensure_future(response.__anext__())
                    done, _ = await asyncio.wait({pending}, timeout=keepalive)
                    if not done:
                        await self.comment(ex, b": keep-alive\n\n")
                        continue
                    task, pending = pending, None
                    try:
                        chunk = task.result()
                    except StopAsyncIteration:
                        break
                    except RETRYABLE_EXCEPTIONS as exc:
                        raise Retry(_transport_error(node, exc)) from None
                else:
                    try:
                        chunk = await response.__anext__()
                    except StopAsyncIteration:
                        break
                out = relay.feed(chunk)
                if out:
                    if not ex.content_sent:
                        if relay.failed is not None:
                            # The node failed before anything of its answer reached the
                            # client: another node can still answer in full.
                            raise Retry(relay.failed)
                        if b"data:" not in out:  # only the node's own keep-alive comments
                            await self.comment(ex, out)
                            continue
                        await self.start_stream(ex)
                        ex.content_sent = True
                        ex.ttft = time.perf_counter() - ex.started
                    await self.write(out)
                    if relay.failed is not None:
                        break  # the error event was the last thing this stream says
        except RETRYABLE_EXCEPTIONS as exc:
            log.warning("%s: %s dropped the stream: %s", ex.request_id, node.name, exc)
        except asyncio.CancelledError:
            # The client left mid-answer: the node's own count never comes, so what was
            # streamed stands in for it (the request log and the tokens-per-minute limit
            # must not count a long answer cut short as its prompt alone).
            if ex.content_sent:
                ex.completion_tokens = relay.streamed
            raise
        finally:
            if pending is not None:
                pending.cancel()
        tail = relay.finish()
        failure = relay.failed
        if failure is not None and not ex.content_sent:
            raise Retry(failure)
        ex.prompt_tokens, ex.completion_tokens = relay.prompt_tokens, relay.completion_tokens
        if ex.completion_tokens is None:
            ex.completion_tokens = relay.streamed  # cut short: what reached the client
        if failure is None:
            self._truncated(ex)  # too late for a header: the log and the request log say it
        await self.start_stream(ex)
        ex.content_sent = True
        if failure is not None:
            ex.status, ex.error, ex.outcome = 502, failure, "fail"
        else:
            ex.outcome = "ok"
        await self.send({"type": "http.response.body", "body": tail, "more_body": False})


def _transport_error(node: NodeView, exc: Exception) -> GatewayError:
    if isinstance(exc, UpstreamTimeout):
        return GatewayError(
            504, f"Node {node.name} timed out.", "server_error", "upstream_timeout", None
        )
    if isinstance(exc, UpstreamConnectError):
        return upstream_unavailable(f"Node {node.name} refused the connection.", 1)
    return GatewayError(
        502,
        f"Node {node.name} failed: {exc}.",
        "server_error",
        "upstream_error",
        None,
    )
