"""The "warming" flag of a node: set while its prefetch profiles load before it returns to
READY, so overlapping probe cycles neither promote it early nor start a second warmup."""

from __future__ import annotations

from clawdbot_site import redis_keys
from clawdbot_site.redis_client import sync_client


def _key(node_name: str) -> str:
    return redis_keys.warming(node_name)


def is_warming(node_name: str) -> bool:
    return bool(sync_client().exists(_key(node_name)))


def claim(node_name: str, ttl_s: float) -> bool:
    """True for the one caller that may warm this node now."""
    return bool(sync_client().set(_key(node_name), "1", nx=True, px=int(ttl_s * 1000)))


def release(node_name: str) -> None:
    sync_client().delete(_key(node_name))
