"""What one gateway process holds: the routing snapshot (refreshed in the background), the
pooled upstream client, the Redis client and admission scripts, and the leases it must keep
alive. Created on the first request, inside the server's event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import redis.asyncio as aredis
from django.conf import settings
from django.db import close_old_connections, connection

from clawdbot_site.redis_client import async_client
from gateway.admission import Admission, EjectionPolicy
from gateway.resp import RespClient
from gateway.routing_version import VERSION_KEY
from gateway.snapshot import Snapshot, build_snapshot
from gateway.upstream_client import UpstreamClient

log = logging.getLogger(__name__)
REFRESH_INTERVAL_S = 0.25  # a config or state change reaches routing within this (+ build time)
FULL_REBUILD_S = 30.0  # catches what no version bump announces (a key passing its expiry)
RENEW_INTERVAL_S = 10.0


@dataclass
class Runtime:
    redis: aredis.Redis
    http: UpstreamClient
    admission: Admission
    snapshot: Snapshot
    leases: dict[str, str] = field(default_factory=dict)  # lease id → "slots:node"/"queue:node"
    redis_ok: bool = True
    snapshot_error: str = ""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot")
_runtime: Runtime | None = None
_lock: asyncio.Lock | None = None


def _build(version: int) -> Snapshot:
    close_old_connections()
    try:
        return build_snapshot(version)
    finally:
        connection.close()


async def _load(version: int) -> Snapshot:
    return await asyncio.get_running_loop().run_in_executor(_executor, _build, version)


async def _read_version(client: aredis.Redis) -> int:
    value = await client.get(VERSION_KEY)
    return int(value or 0)


async def get_runtime() -> Runtime:
    global _runtime, _lock
    if _runtime is not None:
        return _runtime
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        if _runtime is None:
            client = async_client()
            try:
                version = await _read_version(client)
            except Exception:  # Redis down at start: serve what the database says
                version = -1
            snapshot = await _load(version)
            http = UpstreamClient(
                connect_s=settings.CLAWDBOT_CONNECT_TIMEOUT_S,
                read_s=settings.CLAWDBOT_READ_TIMEOUT_S,
            )
            policy = EjectionPolicy(
                after_failures=settings.CLAWDBOT_EJECT_AFTER,
                base_cooldown_ms=int(settings.CLAWDBOT_EJECT_COOLDOWN_S * 1000),
                max_cooldown_ms=int(settings.CLAWDBOT_EJECT_MAX_COOLDOWN_S * 1000),
            )
            admission = Admission(client, RespClient(settings.REDIS_URL), policy)
            try:
                await admission.load()
            except Exception as exc:  # Redis down: requests will say so; scripts load later
                log.warning("could not load admission scripts: %s", exc)
            runtime = Runtime(redis=client, http=http, admission=admission, snapshot=snapshot)
            runtime.tasks.append(asyncio.create_task(_refresh_forever(runtime)))
            runtime.tasks.append(asyncio.create_task(_renew_forever(runtime)))
            _runtime = runtime
    return _runtime


async def _refresh_forever(rt: Runtime) -> None:
    last_full = time.monotonic()
    while True:
        await asyncio.sleep(REFRESH_INTERVAL_S)
        try:
            version = await _read_version(rt.redis)
            rt.redis_ok = True
        except Exception as exc:
            if rt.redis_ok:
                log.warning("Redis unreachable: %s", exc)
            rt.redis_ok = False
            continue
        stale = time.monotonic() - last_full > FULL_REBUILD_S
        if version == rt.snapshot.version and not stale:
            continue
        try:
            rt.snapshot = await _load(version)
            rt.snapshot_error = ""
            last_full = time.monotonic()
        except Exception as exc:
            # The database is down or mid-migration: keep routing on the last snapshot.
            if not rt.snapshot_error:
                log.warning(
                    "snapshot rebuild failed, serving version %s: %s", rt.snapshot.version, exc
                )
            rt.snapshot_error = str(exc)


async def _renew_forever(rt: Runtime) -> None:
    while True:
        await asyncio.sleep(RENEW_INTERVAL_S)
        held = [(zset, lease) for lease, zset in list(rt.leases.items())]
        try:
            await rt.admission.renew(held)
        except Exception as exc:
            log.warning("could not renew %d leases: %s", len(held), exc)
