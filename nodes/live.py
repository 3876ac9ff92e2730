"""What the console and admin show of a node's live condition: its current routing weight
(GPU type × telemetry × probe health, as the data plane computes it) and its GPUs now."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from clawdbot_site import redis_keys
from clawdbot_site.redis_client import sync_client
from nodes import telemetry_store
from nodes.models import Node
from nodes.weights import node_weight


@dataclass(frozen=True)
class NodeLive:
    weight: float
    describe: str
    pass_ratio: float


def live_view(names: list[str]) -> dict[str, NodeLive]:
    if not names:
        return {}
    nodes = {n.name: n for n in Node.objects.filter(name__in=names)}
    readings = telemetry_store.latest(names)
    ratios = sync_client().hmget(redis_keys.HEALTH, names)
    out = {}
    for name, raw_ratio in zip(names, ratios, strict=True):
        node = nodes.get(name)
        if node is None:
            continue
        reading = readings.get(name)
        ratio = float(raw_ratio) if raw_ratio is not None else 1.0
        summary = telemetry_store.summarise(reading)
        weight = node_weight(
            node.gpu_type,
            gpu_count=node.gpu_count,
            telemetry=summary,
            pass_ratio=ratio,
            table=settings.CLAWDBOT_GPU_SCORES,
        )
        if summary is not None:
            text = f"{summary.utilisation:.0%} busy, {summary.temperature_c:.0f} °C"
        elif reading and reading.get("error"):
            text = f"no telemetry: {reading['error']}"
        else:
            text = "no telemetry (no agent reporting)"
        out[name] = NodeLive(weight=weight, describe=text, pass_ratio=ratio)
    return out
