"""What a client is told when admission refuses its request or no node can take it: 429 from
the key's rate limits (with the headers the openai SDK reads), 503 with `Retry-After` when the
cluster cannot serve the model now. Pure functions of the admission verdict."""

from __future__ import annotations

import math

from gateway.admission import Verdict
from gateway.errors import GatewayError, upstream_unavailable
from gateway.http import Headers, encode_headers
from gateway.snapshot import KeyView
from gateway.sso import Caller

# The longest Retry-After we ask a client to honour; longer waits say "do not retry".
MAX_RETRY_AFTER_S = 120
TOO_LARGE = -2  # Verdict.retry_after_ms when the request alone exceeds the key's budget


def rate_headers(key: Caller, verdict: Verdict) -> Headers:
    """The key's limits and what remains of them, on every answer to an admitted request."""
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


def _holder(key: Caller) -> str:
    return "this key" if isinstance(key, KeyView) else "this token's subject"


def rate_limited(key: Caller, verdict: Verdict) -> GatewayError:
    kind = "requests" if verdict.status == "rate_requests" else "tokens"
    limit = key.rpm_limit if kind == "requests" else key.tpm_limit
    if verdict.retry_after_ms == TOO_LARGE:
        return GatewayError(
            429,
            f"Request too large: it needs more tokens than {_holder(key)}'s limit of {limit} "
            "tokens per minute allows. Shorten the prompt or max_tokens.",
            "tokens",
            "rate_limit_exceeded",
            None,
            {"x-should-retry": "false"},
        )
    seconds = max(1, math.ceil(verdict.retry_after_ms / 1000))
    headers = {
        "retry-after": str(min(seconds, MAX_RETRY_AFTER_S)),
        "retry-after-ms": str(max(verdict.retry_after_ms, 1)),
        f"x-ratelimit-limit-{kind}": str(limit),
        f"x-ratelimit-remaining-{kind}": "0",
        f"x-ratelimit-reset-{kind}": f"{seconds}s",
    }
    if seconds > MAX_RETRY_AFTER_S:
        headers["x-should-retry"] = "false"
    return GatewayError(
        429,
        f"Rate limit reached for {_holder(key)}: {limit} {kind} per minute. "
        f"Please try again in {seconds}s.",
        kind,
        "rate_limit_exceeded",
        None,
        headers,
    )


def refusal(verdict: Verdict, key: Caller, model: str) -> GatewayError | None:
    """The error for a verdict that admits nothing; None for ok and queued."""
    if verdict.status in ("rate_requests", "rate_tokens"):
        return rate_limited(key, verdict)
    if verdict.status == "ejected":
        return upstream_unavailable(
            f"Every node serving `{model}` is failing; they are ejected for a cooldown.", 5
        )
    if verdict.status == "full":
        return upstream_unavailable(
            f"All nodes serving `{model}` are at capacity and their queues are full.", 1
        )
    return None


def no_ready_node(model: str) -> GatewayError:
    return upstream_unavailable(
        f"No node is ready to serve `{model}` right now; try again shortly.", 5
    )


def no_node_could_serve(model: str) -> GatewayError:
    return upstream_unavailable(f"No node could serve `{model}`.")


def queue_timed_out(model: str, waited_s: float) -> GatewayError:
    return upstream_unavailable(
        f"Timed out after {waited_s:g} s waiting for a free slot on a node serving `{model}`.", 2
    )


def shared_state_unreachable() -> GatewayError:
    return upstream_unavailable(
        "The gateway cannot reach Redis, where admission state is shared; try again shortly.", 2
    )
