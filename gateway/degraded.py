"""What a degradation tier answers when the cluster fails a request (every node tried failed
before the first byte, or none could take it), and what it keeps for that: tier 1 and up, a
cached answer to the same request (`X-Clawdbot-Cache: hit`); tier 3, the profile's static
answer (`X-Clawdbot-Degraded: static`) or 503 with Retry-After. A request that fails below
tier 1, or finds nothing to stand in, gets its error as before.

The decisions are `response_cache` (which request is which, and when to store) and
`degraded_answers` (what the answers look like); this module applies them for the app."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from django.conf import settings

from gateway import degraded_answers, response_cache
from gateway.errors import GatewayError
from gateway.exchange import Exchange
from gateway.http import JSON, send_response
from gateway.proxy import Proxy
from gateway.runtime import Runtime
from gateway.tiers import Tier
from gateway.upstreams.adapters import GenerationCall
from gateway.upstreams.contract import UpstreamCall
from gateway.validation import ChatRequest, CompletionRequest

log = logging.getLogger(__name__)
# What a stream whose headers went out already says of its stand-in answer: an SSE comment.
MARKERS = {"cache": b": x-clawdbot-cache: hit\n\n", "static": b": x-clawdbot-degraded: static\n\n"}


def _request(call: UpstreamCall) -> ChatRequest | CompletionRequest | None:
    return call.request if isinstance(call, GenerationCall) else None


def cache_key(ex: Exchange, endpoint: str, request: ChatRequest | CompletionRequest) -> str:
    """The request's answer in the cache: its served profile, body and (unless shared) key."""
    assert ex.key is not None
    return response_cache.digest(
        profile=ex.served_model,
        endpoint=endpoint,
        body=request.raw,
        key_id=None if settings.CLAWDBOT_CACHE_SHARED else str(ex.key.id),
    )


async def keep_answer(rt: Runtime, ex: Exchange, endpoint: str, call: UpstreamCall) -> None:
    """Store the answer the exchange kept (`Exchange.answer`), after it went out. Never
    raises: a cache that cannot be written costs a future hit, not this request."""
    request = _request(call)
    if ex.answer is None or request is None:
        return
    answer, ex.answer = ex.answer, None
    try:
        await rt.cache.store(cache_key(ex, endpoint, request), answer)
    except Exception as exc:
        log.warning("%s: answer not cached: %s", ex.request_id, exc)


async def answer_instead(
    rt: Runtime, proxy: Proxy, ex: Exchange, endpoint: str, call: UpstreamCall, error: GatewayError
) -> None:
    """Answer a request the cluster failed with `error`, in the current tier: a cached
    answer, the static answer, or tier 3's 503. Raises `error` when nothing stands in."""
    tier = rt.degradation.tier
    request = _request(call)
    if tier == Tier.NORMAL or not ex.cluster_failed or ex.content_sent:
        raise error
    if request is not None and endpoint in response_cache.ENDPOINTS:
        cached = await _cached(rt, ex, endpoint, request)
        if cached is not None:
            ex.degraded = "cache"
            ex.prompt_tokens, ex.completion_tokens = degraded_answers.usage_counts(cached)
            await _send(proxy, ex, cached, request)
            return
    if tier < Tier.STATIC:
        raise error
    # The answer configured for the profile the client asked for, not its fallback.
    asked = rt.snapshot.profiles.get(ex.downgraded_from or ex.served_model)
    model = asked.model_id if asked is not None else ex.model
    if (
        request is not None
        and asked is not None
        and asked.degraded_mode == "static"
        and asked.degraded_answer
    ):
        ex.degraded = "static"
        ex.downgraded_from, ex.served_model = "", asked.model_id
        ex.prompt_tokens = ex.completion_tokens = 0
        answer = degraded_answers.static_answer(endpoint, asked.degraded_answer, model=model)
        await _send(proxy, ex, answer, request)
        return
    ex.degraded = "unavailable"
    raise degraded_answers.unavailable(model, rt.degradation.policy.min_dwell_s)


async def _cached(
    rt: Runtime, ex: Exchange, endpoint: str, request: ChatRequest | CompletionRequest
) -> dict[str, Any] | None:
    try:
        raw = await rt.cache.fetch(cache_key(ex, endpoint, request))
    except Exception as exc:
        log.warning("%s: the response cache cannot be read: %s", ex.request_id, exc)
        return None
    return degraded_answers.cached_answer(raw, endpoint) if raw is not None else None


async def _send(
    proxy: Proxy,
    ex: Exchange,
    answer: dict[str, Any],
    request: ChatRequest | CompletionRequest,
) -> None:
    """The stand-in answer, as JSON or replayed as a stream. No node answered it: the
    headers name none, and neither do the request log and the metrics."""
    ex.status, ex.error, ex.node = 200, None, ""
    ex.ttft = time.perf_counter() - ex.started
    if not ex.stream:
        ex.response_started = ex.content_sent = True
        await send_response(proxy.send, 200, orjson.dumps(answer), [JSON, *ex.base_headers()])
        return
    if ex.response_started:
        # Keep-alive comments started the stream before the nodes failed, so its headers are
        # out: the stream itself says what answers.
        await proxy.write(MARKERS[ex.degraded])
    else:
        await proxy.start_stream(ex)
    ex.content_sent = True
    events = degraded_answers.sse_replay(answer, include_usage=request.include_usage)
    await proxy.send({"type": "http.response.body", "body": events, "more_body": False})
