"""What one gateway process holds: the routing snapshot (refreshed in the background), the
pooled upstream client, the Redis client and admission scripts, the leases it must keep
alive, and its part in the degradation tiers (a tick a second) with the response cache.
Created on the first request, inside the server's event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aredis
from django.conf import settings
from django.db import close_old_connections, connection

from clawdbot_site import redis_keys
from clawdbot_site.redis_client import async_client
from gateway.admission import Admission, EjectionPolicy
from gateway.auth import TokenVerifier
from gateway.degradation import TICK_S, Change, Degradation
from gateway.leases import HeldLeases
from gateway.queue_signals import QueueSignals
from gateway.response_cache import ResponseCache
from gateway.routing import Policy as RoutingPolicy
from gateway.routing import SampleGate
from gateway.selectors import build_snapshot
from gateway.services import tier_change_record
from gateway.snapshot import Live, Snapshot, reweigh
from gateway.tiers import TierPolicy
from nodes.telemetry_store import summarise, telemetry_key, total_memory_gb
from wire.http_client import UpstreamClient
from wire.resp import RespClient

log = logging.getLogger(__name__)
REFRESH_INTERVAL_S = 0.25  # a config or state change reaches routing within this (+ build time)
FULL_REBUILD_S = 30.0  # catches what no version bump announces (a key passing its expiry)
RENEW_INTERVAL_S = 10.0
LIVE_EVERY = 4  # refresh ticks between telemetry/health reweighs (about once a second)


def routing_policy() -> RoutingPolicy:
    return RoutingPolicy(
        slowdown=settings.CLAWDBOT_BATCH_SLOWDOWN,
        speed_tau_ms=int(settings.CLAWDBOT_SPEED_TAU_S * 1000),
        trust_ms=int(settings.CLAWDBOT_SPEED_TRUST_S * 1000),
        min_samples=settings.CLAWDBOT_SPEED_MIN_SAMPLES,
        affinity=settings.CLAWDBOT_AFFINITY,
        affinity_ttl_ms=int(settings.CLAWDBOT_AFFINITY_TTL_S * 1000),
        affinity_max=settings.CLAWDBOT_AFFINITY_MAX,
    )


@dataclass
class Runtime:
    redis: aredis.Redis
    http: UpstreamClient
    admission: Admission
    degradation: Degradation  # the tier this process acts on, and its request counts
    cache: ResponseCache
    snapshot: Snapshot  # what requests route on: `base` reweighed with live telemetry
    base: Snapshot  # as built from the database
    leases: HeldLeases = field(default_factory=HeldLeases)
    redis_ok: bool = True
    snapshot_error: str = ""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    signals: QueueSignals = field(default_factory=QueueSignals)
    tokens: TokenVerifier | None = None  # single sign-on, when configured
    learning: SampleGate = field(default_factory=SampleGate)  # gateway.routing


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
    value = await client.get(redis_keys.ROUTING_VERSION)
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
                max_idle_s=settings.CLAWDBOT_UPSTREAM_IDLE_S,
                first_byte_s=settings.CLAWDBOT_FIRST_BYTE_TIMEOUT_S,
            )
            policy = EjectionPolicy(
                after_failures=settings.CLAWDBOT_EJECT_AFTER,
                base_cooldown_ms=int(settings.CLAWDBOT_EJECT_COOLDOWN_S * 1000),
                max_cooldown_ms=int(settings.CLAWDBOT_EJECT_MAX_COOLDOWN_S * 1000),
            )
            resp = RespClient(settings.REDIS_URL)
            admission = Admission(client, resp, policy, routing_policy())
            try:
                await admission.load()
            except Exception as exc:  # Redis down: requests will say so; scripts load later
                log.warning("could not load admission scripts: %s", exc)
            runtime = Runtime(
                redis=client,
                http=http,
                admission=admission,
                degradation=Degradation(
                    resp,
                    _tier_policy(),
                    window_s=settings.CLAWDBOT_TIER_WINDOW_S,
                    warm_at=settings.CLAWDBOT_CACHE_WARM_AT,
                    enabled=settings.CLAWDBOT_TIER_ENABLED,
                ),
                cache=ResponseCache(
                    resp,
                    ttl_s=settings.CLAWDBOT_CACHE_TTL_S,
                    max_bytes=settings.CLAWDBOT_CACHE_MAX_BYTES,
                    max_entry_bytes=settings.CLAWDBOT_CACHE_MAX_ENTRY_BYTES,
                ),
                snapshot=snapshot,
                base=snapshot,
                tokens=TokenVerifier.from_settings(settings),
            )
            try:
                runtime.snapshot = reweigh(snapshot, await _live(client, snapshot))
            except Exception as exc:
                log.warning("no live telemetry yet: %s", exc)
            runtime.tasks.append(asyncio.create_task(_refresh_forever(runtime)))
            runtime.tasks.append(asyncio.create_task(_renew_forever(runtime)))
            if settings.CLAWDBOT_TIER_ENABLED:
                runtime.tasks.append(asyncio.create_task(_degrade_forever(runtime)))
            if runtime.tokens is not None and runtime.tokens.jwks is not None:
                runtime.tasks.append(asyncio.create_task(runtime.tokens.jwks.run_forever()))
            _runtime = runtime
    return _runtime


async def _live(client: aredis.Redis, base: Snapshot) -> Live:
    """GPU telemetry and probe pass ratios of every node, in one round trip."""
    names = list(base.nodes)
    async with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(redis_keys.HEALTH)
        if names:
            pipe.mget([telemetry_key(name) for name in names])
        replies = await pipe.execute()
    ratios = {k.decode(): float(v) for k, v in replies[0].items()}
    readings: dict[str, Any] = {}
    for name, raw in zip(names, replies[1] if names else [], strict=True):
        try:
            readings[name] = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            readings[name] = None
    return Live(
        telemetry={n: summarise(r) for n, r in readings.items()},
        memory_gb={n: total_memory_gb(r) for n, r in readings.items()},
        pass_ratio=ratios,
    )


async def _refresh_forever(rt: Runtime) -> None:
    last_full = time.monotonic()
    tick = 0
    while True:
        await asyncio.sleep(REFRESH_INTERVAL_S)
        tick += 1
        try:
            version = await _read_version(rt.redis)
            rt.redis_ok = True
        except Exception as exc:
            if rt.redis_ok:
                log.warning("Redis unreachable: %s", exc)
            rt.redis_ok = False
            continue
        stale = time.monotonic() - last_full > FULL_REBUILD_S
        rebuilt = False
        if version != rt.base.version or stale:
            try:
                rt.base = await _load(version)
                rt.snapshot_error = ""
                last_full = time.monotonic()
                rebuilt = True
            except Exception as exc:
                # The database is down or mid-migration: keep routing on the last snapshot.
                if not rt.snapshot_error:
                    log.warning(
                        "snapshot rebuild failed, serving version %s: %s", rt.base.version, exc
                    )
                rt.snapshot_error = str(exc)
        if rebuilt or tick % LIVE_EVERY == 0:
            try:
                rt.snapshot = reweigh(rt.base, await _live(rt.redis, rt.base))
            except Exception as exc:
                log.warning("live telemetry unavailable: %s", exc)
                rt.snapshot = rt.base


async def _renew_forever(rt: Runtime) -> None:
    while True:
        await asyncio.sleep(RENEW_INTERVAL_S)
        held = rt.leases.slots()
        try:
            await rt.admission.renew(held)
        except Exception as exc:
            log.warning("could not renew %d leases: %s", len(held), exc)


def _tier_policy() -> TierPolicy:
    return TierPolicy(
        thresholds=(
            settings.CLAWDBOT_TIER_1_AT,
            settings.CLAWDBOT_TIER_2_AT,
            settings.CLAWDBOT_TIER_3_AT,
        ),
        margin=settings.CLAWDBOT_TIER_MARGIN,
        min_requests=settings.CLAWDBOT_TIER_MIN_REQUESTS,
        min_dwell_s=settings.CLAWDBOT_TIER_MIN_DWELL_S,
    )


async def _degrade_forever(rt: Runtime) -> None:
    """The degradation tick: this process's counts out, the cluster's window and tier in."""
    failing = False
    while True:
        await asyncio.sleep(TICK_S)
        try:
            change = await rt.degradation.tick()
        except Exception as exc:
            if not failing:
                log.warning("degradation tier not updated: %s", exc)
            failing = True
            continue
        failing = False
        if change is not None:
            window = change.window
            log.warning(
                "degradation tier %d (%s) -> %d (%s): cluster error rate %.1f%% "
                "(%d of %d requests in the last %d s)",
                change.before,
                change.before.label,
                change.after,
                change.after.label,
                window.rate * 100,
                window.failures,
                window.requests,
                rt.degradation.window_s,
            )
            # Off the event loop: the database (and the alert's Redis calls) block.
            record = asyncio.get_running_loop().run_in_executor(_executor, _record, change)
            record.add_done_callback(_recorded)


def _record(change: Change) -> None:
    close_old_connections()
    try:
        tier_change_record(
            before=int(change.before),
            after=int(change.after),
            error_rate=change.window.rate,
            requests=change.window.requests,
            failures=change.window.failures,
            at=change.at,
        )
    finally:
        connection.close()


def _recorded(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("tier change not recorded in the database: %s", future.exception())
