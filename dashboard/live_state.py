"""What the console reads from Redis for its pages: the degradation tier, each node's
in-flight and queued requests, probe pass ratios and latest GPU reading, in one pipelined
round trip whatever the number of nodes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from clawdbot_site import redis_keys
from clawdbot_site.redis_client import sync_client


@dataclass(frozen=True)
class NodeLoad:
    in_flight: int
    queued: int
    pass_ratio: float  # recent probes passed, 0..1 (1 before any probe)
    reading: dict[str, Any] | None  # nodes.telemetry.Reading; None: no live agent


@dataclass(frozen=True)
class LiveState:
    tier: int
    tier_since_ms: int
    nodes: dict[str, NodeLoad]


def read(names: list[str]) -> LiveState:
    now_ms = int(time.time() * 1000)
    pipe = sync_client().pipeline(transaction=False)
    pipe.hmget(redis_keys.TIER, ["tier", "since"])
    for name in names:
        # Leases and places carry their expiry as the score: the lapsed ones are not counted.
        pipe.zcount(redis_keys.slots(name), now_ms, "+inf")
        pipe.zcount(redis_keys.queue(name), now_ms, "+inf")
        pipe.get(redis_keys.telemetry(name))
        pipe.hget(redis_keys.HEALTH, name)
    results = pipe.execute()
    tier, since = (_int(value) for value in results[0])
    nodes = {}
    for i, name in enumerate(names):
        in_flight, queued, raw, ratio = results[1 + 4 * i : 5 + 4 * i]
        nodes[name] = NodeLoad(
            in_flight=int(in_flight),
            queued=int(queued),
            pass_ratio=float(ratio) if ratio is not None else 1.0,
            reading=_reading(raw),
        )
    return LiveState(tier=tier, tier_since_ms=since, nodes=nodes)


def _int(value: bytes | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _reading(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
