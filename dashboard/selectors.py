"""Reads for the console's pages, each a fixed number of queries (pinned by the tests) and
at most one Redis round trip, whatever the number of nodes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Prefetch
from django.shortcuts import get_object_or_404

from dashboard import live_state
from dashboard.request_stats import RecentRequests, recent_requests
from dashboard.transitions import Transition, transitions
from gateway.tiers import Tier
from nodes import telemetry_store
from nodes.live_events import GpuFigures, gpu_figures
from nodes.models import Deployment, GpuSample, HealEvent, Node, ProbeRecord
from nodes.weights import node_weight
from readiness.models import ReadinessCheck, ReadinessRun

PROBES_SHOWN = 50
PROBES_FOR_TRANSITIONS = 1000  # the newest probes read for state transitions (≈ 80 min)
HEALS_SHOWN = 20
GPU_HISTORY = timedelta(hours=6)  # GpuSample: one a minute per GPU, so ≤ 360 points per GPU


@dataclass(frozen=True)
class NodeCard:
    node: Node
    models: list[Deployment]
    weight: float
    in_flight: int
    queued: int
    pass_ratio: float
    gpus: list[GpuFigures]
    telemetry_note: str  # why there are no GPU figures, when there are none


@dataclass(frozen=True)
class Cluster:
    tier: Tier
    tier_since_ms: int
    requests: RecentRequests
    cards: list[NodeCard]


def _nodes() -> list[Node]:
    deployments = Prefetch(
        "deployments",
        queryset=Deployment.objects.select_related("profile").order_by("profile__model_id"),
    )
    return list(Node.objects.prefetch_related(deployments).order_by("name"))


def _cards(nodes: list[Node], live: live_state.LiveState) -> list[NodeCard]:
    cards = []
    for node in nodes:
        load = live.nodes[node.name]
        reading = load.reading
        if reading is None:
            note = "no telemetry: no agent reporting"
        elif not reading.get("nvml") or reading.get("error"):
            note = f"no telemetry: {reading.get('error') or 'NVML unavailable'}"
        else:
            note = ""
        cards.append(
            NodeCard(
                node=node,
                models=list(node.deployments.all()),
                weight=node_weight(
                    node.gpu_type,
                    gpu_count=node.gpu_count,
                    telemetry=telemetry_store.summarise(reading),
                    pass_ratio=load.pass_ratio,
                    table=settings.CLAWDBOT_GPU_SCORES,
                ),
                in_flight=load.in_flight,
                queued=load.queued,
                pass_ratio=load.pass_ratio,
                gpus=gpu_figures(reading),
                telemetry_note=note,
            )
        )
    return cards


def cluster(now: datetime) -> Cluster:
    """The overview: 2 queries for the nodes and their models, 1 to 4 for the requests."""
    nodes = _nodes()
    live = live_state.read([node.name for node in nodes])
    return Cluster(
        tier=Tier(min(max(live.tier, Tier.NORMAL), Tier.STATIC)),
        tier_since_ms=live.tier_since_ms,
        requests=recent_requests(now),
        cards=_cards(nodes, live),
    )


def node_cards() -> list[NodeCard]:
    nodes = _nodes()
    return _cards(nodes, live_state.read([node.name for node in nodes]))


@dataclass(frozen=True)
class NodeDetail:
    card: NodeCard
    probes: list[ProbeRecord]
    transitions: list[Transition]
    heals: list[HealEvent]
    gpu_history: list[dict[str, object]]


def node_detail(name: str, now: datetime) -> NodeDetail:
    """One node's page: 2 queries for the node and its models, 1 for its probes (the table
    and the transitions), 1 for heal events, 1 for the GPU history."""
    deployments = Prefetch(
        "deployments",
        queryset=Deployment.objects.select_related("profile").order_by("profile__model_id"),
    )
    node = get_object_or_404(Node.objects.prefetch_related(deployments), name=name)
    probes = list(node.probes.order_by("-at")[:PROBES_FOR_TRANSITIONS])
    heals = list(node.heal_events.order_by("-started_at")[:HEALS_SHOWN])
    history = list(
        GpuSample.objects.filter(node=node, at__gte=now - GPU_HISTORY)
        .order_by("at", "gpu_index")
        .values("at", "gpu_index", "utilisation_pct", "memory_used_mib", "temperature_c", "power_w")
    )
    return NodeDetail(
        card=_cards([node], live_state.read([node.name]))[0],
        probes=probes[:PROBES_SHOWN],
        transitions=transitions(
            [(p.at, p.state_after) for p in probes], current=node.state, since=node.state_changed_at
        ),
        heals=heals,
        gpu_history=[
            {
                "t": round(row["at"].timestamp()),
                "gpu": row["gpu_index"],
                "utilisation_pct": row["utilisation_pct"],
                "memory_used_gib": None
                if row["memory_used_mib"] is None
                else round(row["memory_used_mib"] / 1024, 2),
                "temperature_c": row["temperature_c"],
                "power_w": row["power_w"],
            }
            for row in history
        ],
    )


@dataclass(frozen=True)
class Readiness:
    run: ReadinessRun | None
    checks: list[ReadinessCheck]


def readiness() -> Readiness:
    """The newest run with its results (2 queries) and the checklist itself (1)."""
    run = ReadinessRun.objects.prefetch_related("results").order_by("-started_at").first()
    return Readiness(run=run, checks=list(ReadinessCheck.objects.all()))
