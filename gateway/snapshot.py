"""The data plane's in-memory view of the config: frozen views of nodes, profiles, routes and
keys, and their reweighing with live telemetry. Built from the database by
`gateway.selectors.build_snapshot` in a thread, swapped atomically, rebuilt when the routing
version in Redis moves. Requests never touch the ORM; if the database is down, the last
snapshot keeps serving."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from django.conf import settings

from nodes.choices import NodeState
from nodes.weights import Telemetry, node_weight, weight_parts


@dataclass(frozen=True, slots=True)
class NodeView:
    id: int
    name: str
    base_url: str
    api_kind: str
    gpu_type: str
    gpu_count: int
    total_vram_gb: float
    max_concurrent: int
    queue_size: int
    state: str
    enabled: bool
    draining: bool
    weight: float
    # The parts of the weight routing by expected completion time uses (gateway.routing):
    # the GPU-type score (the speed prior), health × thermal (applied to learned speeds too)
    # and the utilisation factor (applied to the prior only: a learned speed already shows
    # what another tenant on the GPU costs).
    prior: float = 0.0
    live: float = 1.0
    busy: float = 1.0

    @property
    def routable(self) -> bool:
        return self.enabled and not self.draining and self.state == NodeState.READY


@dataclass(frozen=True, slots=True)
class ProfileView:
    id: int
    model_id: str
    upstream_model: str
    display_name: str
    context_window: int
    max_output_tokens: int
    keep_alive: str
    fallback: str | None
    min_vram_gb: float
    created: int
    degraded_answer: str = ""  # at tier 3, the answer to a request the cluster fails
    degraded_mode: str = "static"  # static (the answer, or 503 without one) | unavailable


@dataclass(frozen=True, slots=True)
class Route:
    """One deployment as the balancer sees it."""

    node: NodeView
    weight: float
    override: float | None = None


@dataclass(frozen=True, slots=True)
class KeyView:
    id: int
    prefix: str
    digest: str
    allowed: frozenset[str] | None  # None: every model
    rpm_limit: int | None
    tpm_limit: int | None
    expires_at: float | None  # unix seconds
    staff: bool

    def may_use(self, model_id: str) -> bool:
        return self.allowed is None or model_id in self.allowed


@dataclass(frozen=True)
class Snapshot:
    version: int
    built_at: float
    nodes: dict[str, NodeView] = field(default_factory=dict)
    profiles: dict[str, ProfileView] = field(default_factory=dict)
    routes: dict[str, tuple[Route, ...]] = field(default_factory=dict)
    keys: dict[str, KeyView] = field(default_factory=dict)

    def routable(self, model_id: str) -> tuple[Route, ...]:
        return tuple(r for r in self.routes.get(model_id, ()) if r.node.routable)

    @property
    def ready_nodes(self) -> int:
        return sum(1 for n in self.nodes.values() if n.routable)


def fits(node: NodeView, profile: ProfileView, measured_gb: float | None = None) -> bool:
    """Configured VRAM first, else what telemetry measured; unknown (0/None) is allowed."""
    memory = node.total_vram_gb or measured_gb
    return not (profile.min_vram_gb and memory and memory < profile.min_vram_gb)


@dataclass(frozen=True, slots=True)
class Live:
    """What changes between config versions: GPU telemetry and probe pass ratios."""

    telemetry: dict[str, Telemetry | None]
    memory_gb: dict[str, float | None]
    pass_ratio: dict[str, float]


def reweigh(base: Snapshot, live: Live) -> Snapshot:
    """The snapshot with each node's weight recomputed from live telemetry and health, and
    routes to nodes whose measured memory cannot hold the profile dropped."""
    nodes = {}
    table = settings.CLAWDBOT_GPU_SCORES
    for name, node in base.nodes.items():
        telemetry = live.telemetry.get(name)
        ratio = live.pass_ratio.get(name, 1.0)
        prior, live_factor, busy = weight_parts(
            node.gpu_type,
            gpu_count=node.gpu_count,
            table=table,
            telemetry=telemetry,
            pass_ratio=ratio,
        )
        weight = node_weight(
            node.gpu_type,
            gpu_count=node.gpu_count,
            table=table,
            telemetry=telemetry,
            pass_ratio=ratio,
        )
        nodes[name] = replace(node, weight=weight, prior=prior, live=live_factor, busy=busy)
    routes = {}
    for model_id, model_routes in base.routes.items():
        profile = base.profiles[model_id]
        kept = []
        for route in model_routes:
            node = nodes[route.node.name]
            if fits(node, profile, live.memory_gb.get(node.name)):
                weight = route.override or node.weight
                kept.append(Route(node=node, weight=weight, override=route.override))
        routes[model_id] = tuple(kept)
    return replace(base, nodes=nodes, routes=routes)
