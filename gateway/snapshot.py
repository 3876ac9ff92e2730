"""The data plane's in-memory view of the config: built from the database in a thread,
swapped atomically, rebuilt when the routing version in Redis moves. Requests never touch
the ORM; if the database is down, the last snapshot keeps serving."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from django.conf import settings
from django.utils import timezone

from gateway.models import ApiKey
from nodes.choices import NodeState
from nodes.models import Deployment, ModelProfile, Node
from nodes.weights import Telemetry, node_weight


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


def _fits(node: NodeView, profile: ProfileView, measured_gb: float | None = None) -> bool:
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
    nodes = {
        name: replace(
            node,
            weight=node_weight(
                node.gpu_type,
                gpu_count=node.gpu_count,
                table=settings.CLAWDBOT_GPU_SCORES,
                telemetry=live.telemetry.get(name),
                pass_ratio=live.pass_ratio.get(name, 1.0),
            ),
        )
        for name, node in base.nodes.items()
    }
    routes = {}
    for model_id, model_routes in base.routes.items():
        profile = base.profiles[model_id]
        kept = []
        for route in model_routes:
            node = nodes[route.node.name]
            if _fits(node, profile, live.memory_gb.get(node.name)):
                weight = route.override or node.weight
                kept.append(Route(node=node, weight=weight, override=route.override))
        routes[model_id] = tuple(kept)
    return replace(base, nodes=nodes, routes=routes)


def build_snapshot(version: int) -> Snapshot:
    """Read the whole routing config (a fixed handful of queries)."""
    nodes = {
        n.name: NodeView(
            id=n.pk,
            name=n.name,
            base_url=n.base_url.rstrip("/"),
            api_kind=n.api_kind,
            gpu_type=n.gpu_type,
            gpu_count=n.gpu_count,
            total_vram_gb=n.total_vram_gb,
            max_concurrent=n.max_concurrent,
            queue_size=n.queue_size,
            state=n.state,
            enabled=n.enabled,
            draining=n.draining,
            weight=node_weight(
                n.gpu_type, gpu_count=n.gpu_count, table=settings.CLAWDBOT_GPU_SCORES
            ),
        )
        for n in Node.objects.all()
    }
    profiles = {
        p.model_id: ProfileView(
            id=p.pk,
            model_id=p.model_id,
            upstream_model=p.upstream_model,
            display_name=p.display_name or p.model_id,
            context_window=p.context_window,
            max_output_tokens=p.max_output_tokens,
            keep_alive=p.keep_alive,
            fallback=p.fallback.model_id if p.fallback else None,
            min_vram_gb=p.min_vram_gb,
            created=int(p.created_at.timestamp()),
        )
        for p in ModelProfile.objects.filter(enabled=True).select_related("fallback")
    }
    routes: dict[str, list[Route]] = {}
    for d in Deployment.objects.select_related("node", "profile"):
        node = nodes.get(d.node.name)
        profile = profiles.get(d.profile.model_id)
        if node is None or profile is None or not _fits(node, profile):
            continue
        routes.setdefault(profile.model_id, []).append(
            Route(node=node, weight=d.weight_override or node.weight, override=d.weight_override)
        )
    now = timezone.now()
    keys = {}
    for k in ApiKey.objects.filter(revoked_at__isnull=True).prefetch_related("allowed_profiles"):
        if k.expires_at is not None and k.expires_at <= now:
            continue
        allowed = frozenset(p.model_id for p in k.allowed_profiles.all())
        keys[k.prefix] = KeyView(
            id=k.pk,
            prefix=k.prefix,
            digest=k.digest,
            allowed=allowed or None,
            rpm_limit=k.rpm_limit,
            tpm_limit=k.tpm_limit,
            expires_at=k.expires_at.timestamp() if k.expires_at else None,
            staff=k.is_staff_key,
        )
    return Snapshot(
        version=version,
        built_at=time.time(),
        nodes=nodes,
        profiles=profiles,
        routes={m: tuple(r) for m, r in routes.items()},
        keys=keys,
    )
