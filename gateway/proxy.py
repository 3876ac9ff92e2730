"""Running one generation request against the cluster: admission (a slot, or a place in a
queue), the upstream call, retries on another node before the first byte reaches the client,
and the streaming relay. Decisions are made elsewhere and applied here: whose fault a failure
is (`node_faults`), what a refusal says (`refusals`), what was used (`accounting`). The
closing bookkeeping is `records.close_exchange`."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, NoReturn

from django.conf import settings
from redis.exceptions import RedisError

from gateway import node_faults, prefixes, refusals, routing
from gateway.accounting import prompt_truncated
from gateway.admission import Verdict
from gateway.errors import GatewayError
from gateway.exchange import Exchange
from gateway.http import JSON, SSE_HEADERS, Send
from gateway.ids import new_id
from gateway.leases import Lease
from gateway.node_faults import RETRYABLE_EXCEPTIONS, Outcome, Retry
from gateway.queue_signals import Place
from gateway.runtime import Runtime
from gateway.snapshot import NodeView, Route
from gateway.upstreams.adapters import NotAnAnswer
from gateway.upstreams.contract import NodeCall, StreamRelay, UpstreamCall
from wire.http_client import UpstreamResponse
from wire.resp import RespError

log = logging.getLogger(__name__)

POLL_MAX_S = 0.25  # longest wait between a queued request's admission calls
POLL_MAX_UNSIGNALLED_S = 0.05  # the same without wake-ups, or with other nodes to watch


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
            raise _cluster_failure(ex, refusals.no_ready_node(ex.model))
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
        raise _cluster_failure(ex, last or refusals.no_node_could_serve(ex.model))

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
            request=ex.routing,
        )
        refused = refusals.refusal(verdict, key, ex.model)
        if refused is not None and refused.status == 429:
            raise refused
        if first:
            ex.headers = refusals.rate_headers(key, verdict)
        if refused is not None:
            raise _cluster_failure(ex, refused)  # every node busy with a full queue, or ejected
        self.rt.leases.hold(ex, Lease(lease, verdict.node, queued=verdict.status == "queued"))
        if verdict.status == "queued":
            verdict = await self.wait_in_queue(ex, routes, lease, prefer)
        self._explain(ex, verdict)
        return self.rt.snapshot.nodes.get(verdict.node) or next(
            r.node for r in routes if r.node.name == verdict.node
        )

    def _explain(self, ex: Exchange, verdict: Verdict) -> None:
        """Why the node: for the X-Clawdbot-Route and X-Clawdbot-Affinity headers, the request
        log, and what the answer will teach about the node's speed."""
        ex.route = routing.reason(
            verdict.node,
            verdict.expected_s,
            verdict.runner_up,
            verdict.runner_up_s,
            verdict.runner_up_queued,
        )
        found = ex.routing.prefixes if ex.routing is not None else prefixes.NONE
        ex.affinity = routing.affinity_label(
            found, verdict.affine, verdict.node, self.rt.admission.routing.affinity
        )
        ex.cached_tokens = verdict.cached if verdict.affine == verdict.node else 0
        ex.cache_since = verdict.cache_since
        ex.running = verdict.running

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
            raise refusals.shared_state_unreachable() from None

    async def wait_in_queue(
        self, ex: Exchange, routes: tuple[Route, ...], lease: str, prefer: str
    ) -> Verdict:
        signals = self.rt.signals
        assert ex.lease is not None
        place = signals.enter(ex.lease.node)
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
                timed_out = refusals.queue_timed_out(ex.model, settings.CLAWDBOT_QUEUE_TIMEOUT_S)
                raise _cluster_failure(ex, timed_out)
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
                queued_at=place.node,
                prefer_gpu=prefer,
                request=ex.routing,
            )
            signals.polled(place)
            if verdict.status == "ok":
                assert ex.lease is not None
                self.rt.leases.hold(ex, ex.lease.granted(verdict.node))
                return verdict

    async def release(self, ex: Exchange, outcome: Outcome) -> None:
        """Free the lease now (between attempts). The final release rides the closing pipeline."""
        lease = self.rt.leases.drop(ex)
        if lease is None:
            return
        await asyncio.shield(self.rt.admission.release(lease, outcome=outcome))

    async def call_once(self, ex: Exchange, node: NodeView, call: NodeCall) -> None:
        try:
            ex.node_started = time.perf_counter()
            response = await self.rt.http.post(node.base_url, call.path, call.body)
            try:
                raw = await response.read()
            finally:
                response.close()
            ex.node_done = time.perf_counter()
        except RETRYABLE_EXCEPTIONS as exc:
            raise node_faults.for_transport(node.name, exc) from None
        if response.status != 200:
            error = call.error(response.status, raw)
            retry = node_faults.for_status(response.status, error)
            if retry is not None:
                raise retry
            ex.outcome = node_faults.ANSWERED  # the request was at fault
            raise error
        try:
            body, ex.prompt_tokens, ex.completion_tokens = call.translate(raw)
        except NotAnAnswer as error:
            raise node_faults.for_unreadable_answer(error) from None
        # Only OpenAI-compatible servers say how much of the prompt came from their cache.
        ex.node_cached = getattr(call, "cached_tokens", None)
        ex.node_timings = getattr(call, "timings", None)  # Ollama's own prefill/decode times
        ex.outcome = node_faults.ANSWERED
        ex.ttft = time.perf_counter() - ex.started
        headers = [JSON, *ex.base_headers()]
        if self._truncated(ex):
            headers.append((b"x-clawdbot-prompt-truncated", b"true"))
        elif ex.keep_answer:
            ex.answer = body  # for the response cache, stored once the answer is out
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
        ratio = settings.CLAWDBOT_TRUNCATION_RATIO
        if prompt_truncated(ex.prompt_tokens, ex.prompt_estimate, ratio):
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
            ex.node_started = time.perf_counter()
            response = await self.rt.http.post(
                node.base_url, call.path, call.body, settings.CLAWDBOT_KEEPALIVE_S, keep_alive
            )
        except RETRYABLE_EXCEPTIONS as exc:
            raise node_faults.for_transport(node.name, exc) from None
        try:
            if response.status != 200:
                try:
                    raw = await response.read()
                except RETRYABLE_EXCEPTIONS as exc:
                    raise node_faults.for_transport(node.name, exc) from None
                error = call.error(response.status, raw)
                retry = node_faults.for_status(response.status, error)
                if retry is not None:
                    raise retry
                ex.outcome = node_faults.ANSWERED  # the request was at fault
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
                        raise node_faults.for_transport(node.name, exc) from None
                else:
                    try:
                        chunk = await response.__anext__()
                    except StopAsyncIteration:
                        break
                out = relay.feed(chunk)
                if out:
                    if not ex.content_sent:
                        if relay.failed is not None:
                            self._failed_before_content(ex, relay.failed)
                        if b"data:" not in out:  # only the node's own keep-alive comments
                            await self.comment(ex, out)
                            continue
                        if ex.response_started:
                            # Keep-alive comments opened the stream before a node answered,
                            # so its headers name none: say which one did, as a comment too
                            # (SSE clients skip it; the console's chat page reads it).
                            await self.write(b": x-clawdbot-node " + node.name.encode() + b"\n\n")
                        await self.start_stream(ex)
                        ex.content_sent = True
                        ex.node_first = time.perf_counter()
                        ex.ttft = ex.node_first - ex.started
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
        ex.node_done = time.perf_counter()
        tail = relay.finish()
        failure = relay.failed
        if failure is not None and not ex.content_sent:
            self._failed_before_content(ex, failure)
        ex.prompt_tokens, ex.completion_tokens = relay.prompt_tokens, relay.completion_tokens
        ex.node_cached = getattr(relay, "cached_tokens", None)  # as for answers, above
        ex.node_timings = getattr(relay, "timings", None)
        if ex.completion_tokens is None:
            ex.completion_tokens = relay.streamed  # cut short: what reached the client
        if failure is None:
            self._truncated(ex)  # too late for a header: the log and the request log say it
        await self.start_stream(ex)
        ex.content_sent = True
        if failure is not None:
            ex.status, ex.error = node_faults.CUT_SHORT_STATUS, failure
            ex.outcome = node_faults.CUT_SHORT
        else:
            ex.outcome = node_faults.ANSWERED
        await self.send({"type": "http.response.body", "body": tail, "more_body": False})

    def _failed_before_content(self, ex: Exchange, error: GatewayError) -> NoReturn:
        """Nothing of the answer reached the client: another node, or the client's error."""
        retry = node_faults.for_stream_error(error)
        if retry is not None:
            raise retry
        ex.outcome = node_faults.ANSWERED  # the request was at fault
        raise error


def _cluster_failure(ex: Exchange, error: GatewayError) -> GatewayError:
    """`error` ends the request because the cluster could not answer it: it counts against
    the cluster's error rate, and in a degradation tier another answer may stand in."""
    ex.cluster_failed = True
    return error
