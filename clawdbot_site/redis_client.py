"""The Redis connections: one sync client per process, one async client per event loop."""

from __future__ import annotations

import asyncio
from functools import cache

import redis
import redis.asyncio as aredis
from django.conf import settings

_async_clients: dict[int, aredis.Redis] = {}


@cache
def sync_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, health_check_interval=30)


def async_client() -> aredis.Redis:
    """The client bound to the running loop (asyncio connections cannot cross loops)."""
    loop_id = id(asyncio.get_running_loop())
    client = _async_clients.get(loop_id)
    if client is None:
        client = aredis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, max_connections=256)
        _async_clients[loop_id] = client
    return client
