"""Whose fault a failed attempt is: the node's (try another node, and maybe count it towards
the node's ejection) or the request's (answer the client, count nothing against the node).
Pure decisions; the proxy applies them."""

from __future__ import annotations

from typing import Literal

from gateway.errors import GatewayError, upstream_unavailable
from wire.http_client import UpstreamConnectError, UpstreamError, UpstreamTimeout

# Feeds ejection through the RELEASE script: "fail" is a step towards ejecting the node,
# "ok" ends a run of failures, "neutral" is neither.
Outcome = Literal["ok", "fail", "neutral"]
ANSWERED: Outcome = "ok"  # the node answered, even with the client's error
CUT_SHORT: Outcome = "fail"  # the node's stream failed after content reached the client
CUT_SHORT_STATUS = 502  # what the request log records for such a stream

# Transport failures worth another node.
RETRYABLE_EXCEPTIONS = (UpstreamError,)
# Node answers that say the node, not the request, is at fault: its credentials or its model
# setup are wrong (the gateway only routes a model to nodes meant to serve it), it timed the
# request out, or it is busy. Every 5xx too.
NODE_FAULT_STATUSES = frozenset({401, 403, 404, 408, 429})
# Retried on another node, but no step towards ejection: a node without one model, or busy
# for a moment, still serves the rest.
NOT_FAILING_STATUSES = frozenset({404, 429})


class Retry(Exception):
    """This node failed before anything reached the client: try another one."""

    def __init__(self, error: GatewayError, outcome: Outcome = "fail") -> None:
        super().__init__(str(error))
        self.error = error
        self.outcome: Outcome = outcome


def node_at_fault(status: int) -> bool:
    return status >= 500 or status in NODE_FAULT_STATUSES


def for_status(status: int, error: GatewayError) -> Retry | None:
    """The node answered `status` (not 200) with `error`: a Retry when that is the node's
    fault, None when the error is the client's to read."""
    if not node_at_fault(status):
        return None
    return Retry(error, "neutral" if status in NOT_FAILING_STATUSES else "fail")


def for_unreadable_answer(error: GatewayError) -> Retry:
    """A 200 that is not an answer (not a JSON object): the node's fault, unlike an error
    raised while translating a real answer, which is the client's."""
    return Retry(error)


def for_stream_error(error: GatewayError) -> Retry | None:
    """The node's stream failed before any content reached the client (an error line or
    event, a stream cut short): another node can still answer in full. Unless the error is
    the client's: vLLM checks some parameters (logit_bias) only once the stream has begun,
    and answers them with 200 and a first event saying 400, which is judged exactly like the
    400 it would have been without streaming."""
    return for_status(error.status, error)


def transport_error(node: str, exc: Exception) -> GatewayError:
    """What the client is told when the last node tried failed this way."""
    if isinstance(exc, UpstreamTimeout):
        return GatewayError(504, f"Node {node} timed out.", "server_error", "upstream_timeout")
    if isinstance(exc, UpstreamConnectError):
        return upstream_unavailable(f"Node {node} refused the connection.", 1)
    return GatewayError(502, f"Node {node} failed: {exc}.", "server_error", "upstream_error")


def for_transport(node: str, exc: Exception) -> Retry:
    return Retry(transport_error(node, exc))


def cluster_failed(outcome: Outcome, cluster_failed: bool) -> bool | None:
    """What a finished request says about the cluster, for the degradation tiers' error
    rate: True when the cluster failed it (every node tried failed or timed out, none could
    take it, or its stream broke off), False when a node answered it (with the client's
    error too), None when it says nothing (refused before routing: a bad body, a bad key, the
    key's rate limit; the client left first). A request a retry saved is not a failure: its
    client got the answer, and the failed node's ejection count has the failure."""
    if cluster_failed or outcome == CUT_SHORT:
        return True
    if outcome == ANSWERED:
        return False
    return None
