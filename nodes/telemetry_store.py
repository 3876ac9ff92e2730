"""GPU telemetry and agent heartbeats in Redis, and what the control plane makes of them.

Both live under keys with a TTL: an agent that dies stops refreshing them, so its node then
reads as "no telemetry" and "no live agent" instead of showing its last numbers forever.

    clawdbot:telemetry:<node>   latest reading (JSON, `nodes.telemetry.Reading`), TTL 15 s
    clawdbot:agent:<node>       agent heartbeat (JSON: host, pid, at), TTL 30 s
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from clawdbot_site import redis_keys
from clawdbot_site.redis_client import sync_client
from nodes.weights import Telemetry

log = logging.getLogger(__name__)

TELEMETRY_TTL_S = 15.0  # three missed 5-second readings
HEARTBEAT_TTL_S = 30.0


def telemetry_key(node_name: str) -> str:
    return redis_keys.telemetry(node_name)


def agent_key(node_name: str) -> str:
    return redis_keys.agent_heartbeat(node_name)


def publish(node_name: str, reading: Mapping[str, Any], ttl_s: float = TELEMETRY_TTL_S) -> None:
    sync_client().set(telemetry_key(node_name), orjson.dumps(reading), px=_ms(ttl_s))


def latest(node_names: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    """The newest reading of each node (None: no live agent or it never reported), one MGET."""
    names = list(node_names)
    if not names:
        return {}
    raw = sync_client().mget([telemetry_key(name) for name in names])
    return {name: decode(name, value) for name, value in zip(names, raw, strict=True)}


def heartbeat(node_name: str, ttl_s: float = HEARTBEAT_TTL_S) -> None:
    beat = {"host": socket.gethostname(), "pid": os.getpid(), "at": round(time.time(), 3)}
    sync_client().set(agent_key(node_name), orjson.dumps(beat), px=_ms(ttl_s))


def forget_agent(node_name: str) -> None:
    """A cleanly stopped agent says so at once instead of waiting for its heartbeat to expire."""
    sync_client().delete(agent_key(node_name))


def agents_alive(node_names: Iterable[str]) -> set[str]:
    names = list(node_names)
    if not names:
        return set()
    raw = sync_client().mget([agent_key(name) for name in names])
    return {name for name, value in zip(names, raw, strict=True) if value is not None}


def summarise(reading: Mapping[str, Any] | None) -> Telemetry | None:
    """The routing weight's input: mean GPU utilisation (0..1) and the hottest GPU.

    None when there is nothing to weigh: no reading, NVML unavailable, no GPUs, or no GPU
    that reported utilisation and temperature (the weight then uses neutral factors).
    """
    if not reading or not reading.get("nvml"):
        return None
    utilisations = [
        float(gpu["utilisation_gpu_pct"])
        for gpu in reading.get("gpus") or []
        if gpu.get("utilisation_gpu_pct") is not None
    ]
    temperatures = [
        float(gpu["temperature_c"])
        for gpu in reading.get("gpus") or []
        if gpu.get("temperature_c") is not None
    ]
    if not utilisations or not temperatures:
        return None
    mean = sum(utilisations) / len(utilisations) / 100.0
    return Telemetry(utilisation=min(max(mean, 0.0), 1.0), temperature_c=max(temperatures))


def total_memory_gb(reading: Mapping[str, Any] | None) -> float | None:
    """GPU memory of the whole node in GB (GiB, as GPU marketing counts: an "80 GB" A100
    reports 81920 MiB), or None when no GPU reported its memory."""
    if not reading or not reading.get("nvml"):
        return None
    totals = [
        int(gpu["memory_total_mib"])
        for gpu in reading.get("gpus") or []
        if gpu.get("memory_total_mib") is not None
    ]
    if not totals:
        return None
    return round(sum(totals) / 1024, 1)


def decode(node_name: str, value: bytes | str | None) -> dict[str, Any] | None:
    """A reading as stored under `telemetry_key(node_name)`, or None (no key, or not one)."""
    if value is None:
        return None
    try:
        reading = orjson.loads(value)
    except orjson.JSONDecodeError:
        log.warning("telemetry of %s in Redis is not JSON; ignoring it", node_name)
        return None
    return reading if isinstance(reading, dict) else None


def _ms(seconds: float) -> int:
    # PX, not EX: tests (and a fast control loop) may ask for sub-second TTLs.
    return max(1, round(seconds * 1000))
