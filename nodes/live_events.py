"""Events for the web console's live pages, sent to the Channels group the console's
WebSocket consumers listen on (dashboard.consumers). The control plane sends them; it knows
nothing of the console beyond this group name and the payloads below.

Sending is best effort and cheap: after the transaction commits, the event is handed to a
sender thread (nodes.live_sender) and the caller goes on; a channel layer that is down costs a
log line, never a probe, a state change or a reading."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from django.db import transaction
from django.utils import timezone
from redis.exceptions import RedisError

from clawdbot_site import redis_keys
from clawdbot_site.redis_client import sync_client
from nodes.live_sender import Sender

if TYPE_CHECKING:  # the node agent imports this module and needs no models
    from nodes.models import Node

log = logging.getLogger(__name__)

GROUP = "console"
SENDER = Sender(GROUP)


class NodeStateEvent(TypedDict):
    type: Literal["node.state"]
    node: str
    state: str
    previous: str
    draining: bool
    enabled: bool
    error: str
    at: str  # ISO 8601


class ProbeEvent(TypedDict):
    type: Literal["node.probe"]
    node: str
    ok: bool
    latency_ms: float
    error: str
    state: str
    at: str


class GpuFigures(TypedDict):
    index: int
    name: str | None
    utilisation_pct: float | None
    memory_used_mib: float | None
    memory_total_mib: float | None
    temperature_c: float | None
    power_w: float | None
    power_limit_w: float | None


class TelemetryEvent(TypedDict):
    type: Literal["node.telemetry"]
    node: str
    nvml: bool
    error: str
    gpus: list[GpuFigures]
    at: str


class LoadEvent(TypedDict):
    type: Literal["cluster.load"]
    nodes: dict[str, list[int]]  # node → [in flight, queued]
    tier: int  # the degradation tier the gateways last agreed on (gateway.degradation)
    at: str


Event = NodeStateEvent | ProbeEvent | TelemetryEvent | LoadEvent


def gpu_figures(reading: Mapping[str, Any] | None) -> list[GpuFigures]:
    """What the console shows of each GPU in a reading (nodes.telemetry.Reading)."""
    if not reading or not reading.get("nvml"):
        return []
    return [
        {
            "index": int(gpu.get("index") or 0),
            "name": gpu.get("name"),
            "utilisation_pct": gpu.get("utilisation_gpu_pct"),
            "memory_used_mib": gpu.get("memory_used_mib"),
            "memory_total_mib": gpu.get("memory_total_mib"),
            "temperature_c": gpu.get("temperature_c"),
            "power_w": gpu.get("power_draw_w"),
            "power_limit_w": gpu.get("power_limit_w"),
        }
        for gpu in reading.get("gpus") or []
    ]


def node_state(node: Node, previous: str) -> NodeStateEvent:
    return {
        "type": "node.state",
        "node": node.name,
        "state": node.state,
        "previous": previous,
        "draining": node.draining,
        "enabled": node.enabled,
        "error": node.last_probe_error,
        "at": timezone.now().isoformat(),
    }


def probe(node: Node, *, ok: bool, latency_ms: float, error: str) -> ProbeEvent:
    return {
        "type": "node.probe",
        "node": node.name,
        "ok": ok,
        "latency_ms": round(latency_ms, 1),
        "error": error,
        "state": node.state,
        "at": (node.last_probe_at or timezone.now()).isoformat(),
    }


def telemetry(node_name: str, reading: Mapping[str, Any]) -> TelemetryEvent:
    return {
        "type": "node.telemetry",
        "node": node_name,
        "nvml": bool(reading.get("nvml")),
        "error": str(reading.get("error") or ""),
        "gpus": gpu_figures(reading),
        "at": timezone.now().isoformat(),
    }


def announce_load(node_names: list[str]) -> None:
    """Each node's requests in flight and queued, as admission counts them (leases not yet
    expired), and the degradation tier, in one event: the probe cycle sends it every 5 s."""
    if not node_names:
        return
    now_ms = int(time.time() * 1000)
    try:
        pipe = sync_client().pipeline(transaction=False)
        for name in node_names:
            pipe.zcount(redis_keys.slots(name), now_ms, "+inf")
            pipe.zcount(redis_keys.queue(name), now_ms, "+inf")
        pipe.hget(redis_keys.TIER, "tier")
        *counts, tier = pipe.execute()
    except RedisError as exc:
        log.warning("console load event not sent: %s", exc)
        return
    nodes = {
        name: [int(counts[2 * i]), int(counts[2 * i + 1])] for i, name in enumerate(node_names)
    }
    send(
        {
            "type": "cluster.load",
            "nodes": nodes,
            "tier": int(tier or 0),
            "at": timezone.now().isoformat(),
        }
    )


def send_after_commit(event: Event) -> None:
    """Send once the current transaction commits (at once outside one): a console must not
    show a state that a rollback undid."""
    transaction.on_commit(lambda: send(event))


def send(event: Event) -> None:
    """Hand the event to this process's sender thread (nodes.live_sender); never waits on
    Redis, never raises for the channel layer."""
    SENDER.put(event)
