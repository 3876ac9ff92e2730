"""The closing bookkeeping of a request: its lease released, its metrics and its request-log
entry recorded, in one Redis round trip (see admission.RELEASE)."""

from __future__ import annotations

import logging
import time

from gateway import metrics, node_faults, routing
from gateway.accounting import token_correction
from gateway.exchange import Exchange
from gateway.request_log import MESSAGE_LIMIT, LogEntry
from gateway.runtime import Runtime
from gateway.sso import TokenPrincipal

log = logging.getLogger(__name__)


async def close_exchange(rt: Runtime, ex: Exchange) -> None:
    """Release the lease and record metrics and the request log: one pipelined round trip.
    Also for requests that never reached the proxy (no lease: the script only records).
    What it says about the cluster is counted for the degradation tiers, in memory."""
    duration = time.perf_counter() - ex.started
    token_delta = 0
    if ex.key is not None and ex.key.tpm_limit:
        token_delta = token_correction(
            prompt_tokens=ex.prompt_tokens,
            completion_tokens=ex.completion_tokens,
            prompt_estimate=ex.prompt_estimate,
            reserved=ex.estimated_tokens,
        )
    entry = LogEntry(
        request_id=ex.request_id,
        ts=ex.wall,
        endpoint=ex.endpoint,
        key_prefix=ex.key.prefix if ex.key else "",
        subject=ex.key.subject if isinstance(ex.key, TokenPrincipal) else "",
        model=ex.model,
        served_model=ex.served_model,
        node=ex.node,
        status=ex.status,
        stream=ex.stream,
        latency_ms=round(duration * 1000, 3),
        ttft_ms=round(ex.ttft * 1000, 3) if ex.ttft is not None else None,
        prompt_tokens=ex.prompt_tokens,
        completion_tokens=ex.completion_tokens,
        attempts=ex.attempts,
        error_code=(ex.error.code or ex.error.type) if ex.error else "",
        error_message=ex.error.message[:MESSAGE_LIMIT] if ex.error else "",
        prompt_truncated=ex.truncated,
        degraded=ex.degraded or ("downgraded" if ex.downgraded_from else ""),
        affinity=ex.affinity,
        route=ex.route,
    )
    failed = node_faults.cluster_failed(ex.outcome, ex.cluster_failed)
    if failed is not None:
        rt.degradation.count(failed)  # in memory: the degradation tick sends it on
    lease = rt.leases.drop(ex)
    try:
        await rt.admission.release(
            lease,
            outcome=ex.outcome,
            key_id=ex.key.id if ex.key else None,
            token_delta=token_delta,
            learned=_learned(rt, ex),
            record=metrics.record_args(
                # The profile that served it, never the client's string: see gateway.metrics.
                model=ex.served_model,
                node=ex.node,
                status=ex.status,
                duration_s=duration,
                ttft_s=ex.ttft if ex.status == 200 else None,
                prompt_tokens=ex.prompt_tokens,
                completion_tokens=ex.completion_tokens,
                log_entry=entry.to_json(),
                affinity=ex.affinity,
            ),
        )
    except Exception as exc:
        # Redis is down: the lease lapses by itself; the log line goes to the process log.
        log.warning("could not record %s: %s; %s", ex.request_id, exc, entry.to_json())


def _learned(rt: Runtime, ex: Exchange) -> list[object] | None:
    """What a whole answer from a node says about its speed for the model (gateway.routing);
    None for anything else (a failure, an answer cut short, a stand-in answer)."""
    request = ex.routing
    if (
        request is None
        or ex.status != 200
        or ex.degraded
        or ex.node_started is None
        or ex.node_done is None
        or ex.completion_tokens is None
        or ex.outcome != node_faults.ANSWERED
        or not rt.learning.due(request.model, ex.node, ex.node_done)
    ):
        return None
    policy = rt.admission.routing
    prompt = ex.prompt_tokens if ex.prompt_tokens is not None else ex.prompt_estimate
    # What the node had to prefill: the prompt less its cache, as the node reports it or,
    # where it does not, as affinity expected.
    cached = ex.node_cached if ex.node_cached is not None else ex.cached_tokens
    timing = routing.Timing(
        service_s=ex.node_done - ex.node_started,
        first_token_s=ex.node_first - ex.node_started if ex.node_first is not None else None,
        prompt_tokens=max(prompt - cached, 0),
        completion_tokens=ex.completion_tokens,
    )
    if ex.node_timings is not None:  # the server timed it itself: no guessing
        sample = routing.exact_sample(timing.prompt_tokens, ex.completion_tokens, ex.node_timings)
    else:
        sample = routing.speed_sample(timing)
    kept = routing.cache_kept(ex.cached_tokens, ex.node_cached) if ex.affinity == "hit" else None
    answer = ex.completion_tokens if request.output_tokens is None else None
    return routing.release_args(
        request.model, ex.node, sample, answer, policy, kept, ex.running, ex.cache_since
    )
