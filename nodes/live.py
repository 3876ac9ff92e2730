"""What the console and admin show of a node's live condition: its current routing weight
(GPU type × telemetry × probe health, as the data plane computes it), its GPUs now, and the
load its inference server reports (nodes.server_load_store)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from clawdbot_site import redis_keys
from clawdbot_site.redis_client import sync_client
from nodes import server_load_store, telemetry_store
from nodes.models import Node
from nodes.weights import node_weight


@dataclass(frozen=True)
class NodeLive:
    weight: float
    describe: str
    pass_ratio: float
    server_load: str = "-"


def live_view(names: list[str]) -> dict[str, NodeLive]:
    if not names:
        return {}
    nodes = {n.name: n for n in Node.objects.filter(name__in=names)}
    readings = telemetry_store.latest(names)
    loads = server_load_store.latest(names)
    now_ms = int(time.time() * 1000)
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
        out[name] = NodeLive(
            weight=weight,
            describe=text,
            pass_ratio=ratio,
            server_load=describe_server_load(loads.get(name), now_ms),
        )
    return out


def describe_server_load(load: dict[str, Any] | None, now_ms: int) -> str:
    """`3 running, 7 waiting, KV cache 70%`, said stale (with its age) when the last scrape
    failed; `not reported` when the server exports no gauges or none were read lately."""
    if load is None:
        return "not reported"
    text = f"{load['running']} running, {load['waiting']} waiting"
    if load.get("kv") is not None:
        text += f", KV cache {load['kv']:.0%}"
    if load.get("stale"):
        text += f" (stale: {max(0, now_ms - load['at']) / 1000:.0f} s old)"
    return text
