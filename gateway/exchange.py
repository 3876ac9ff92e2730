"""One client request as the gateway tracks it, from arrival to its closing record: who asked,
for what, which node answered, what it used and how it ended. The response headers, the
request log and the metrics are all read from it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gateway.errors import GatewayError
from gateway.http import Headers
from gateway.ids import new_id
from gateway.leases import Lease
from gateway.node_faults import Outcome
from gateway.routing import Request as RoutingRequest
from gateway.sso import Caller


@dataclass
class Exchange:
    endpoint: str
    started: float = field(default_factory=time.perf_counter)
    wall: float = field(default_factory=time.time)
    request_id: str = field(default_factory=lambda: "req-" + new_id())
    key: Caller | None = None  # a Clawdbot key, or a token's principal
    model: str = ""  # as the client asked
    served_model: str = ""  # the profile that served it
    stream: bool = False
    node: str = ""  # the node of the current (finally, the last) attempt
    status: int = 200
    attempts: int = 0  # nodes tried: 0 when refused before any node
    ttft: float | None = None
    prompt_tokens: int | None = None  # the node's counts; None where it sent none
    completion_tokens: int | None = None
    estimated_tokens: int = 0  # prompt plus requested output: the rate-limit reservation
    prompt_estimate: int = 0
    error: GatewayError | None = None
    response_started: bool = False
    content_sent: bool = False
    lease: Lease | None = None  # held until the closing record releases it
    outcome: Outcome = "neutral"  # for the node's ejection count
    headers: Headers = field(default_factory=list)  # rate-limit headers for the answer
    truncated: bool = False
    # Degradation tiers (gateway.degradation): the cluster failed this request (every node
    # tried failed, or none could take it), for the error rate; the profile it was
    # downgraded from; what answered instead of a node (cache, static, unavailable).
    cluster_failed: bool = False
    downgraded_from: str = ""
    degraded: str = ""
    keep_answer: bool = False  # keep a successful non-streamed answer for the response cache
    answer: bytes | None = None
    # Routing (gateway.routing): what it was told of the request, why it chose the node,
    # and how the answer was timed on the node (perf_counter), to learn the node's speed.
    routing: RoutingRequest | None = None
    session: str = ""  # the client's X-Clawdbot-Session, if any
    route: str = ""
    affinity: str = ""  # hit | miss | rebalanced, or empty
    cached_tokens: int = 0  # of the prompt, held by the chosen node (as far as we know)
    cache_since: int = -1  # tokens that node cached since it took the prefix (-1: unknown)
    running: int = 0  # sequences on the node with this one when it was admitted
    node_started: float | None = None
    node_first: float | None = None
    node_done: float | None = None
    node_cached: int | None = None  # prompt tokens the node took from its cache, if it says
    node_timings: tuple[float, float] | None = None  # its own prefill and decode seconds

    def base_headers(self, *, with_node: bool = True) -> Headers:
        headers: Headers = [(b"x-request-id", self.request_id.encode())]
        if self.node and with_node:
            headers.append((b"x-clawdbot-node", self.node.encode()))
        if self.attempts > 1:
            headers.append((b"x-clawdbot-attempts", str(self.attempts).encode()))
        if self.downgraded_from:
            headers.append((b"x-model-downgraded", self.served_model.encode()))
        if self.route and with_node:
            headers.append((b"x-clawdbot-route", self.route.encode()))
        if self.affinity and with_node:
            headers.append((b"x-clawdbot-affinity", self.affinity.encode()))
        if self.degraded == "cache":
            headers.append((b"x-clawdbot-cache", b"hit"))
        elif self.degraded == "static":
            headers.append((b"x-clawdbot-degraded", b"static"))
        return headers + self.headers
