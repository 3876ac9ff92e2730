"""One probe cycle: probe nodes concurrently, record each result through the state machine,
and start what a state change calls for (self-heal on READY → DEGRADED, warmup before a node
returns to READY). Used by the periodic task and the admin's "Probe now"."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import httpx
from django.conf import settings

from clawdbot_site import redis_keys
from clawdbot_site.redis_client import sync_client
from nodes import live_events
from nodes.models import Node
from nodes.probes import ProbeResult, probe
from nodes.services import ProbeOutcome, node_record_probe


async def _probe_all(targets: list[tuple[str, str, list[str]]]) -> list[ProbeResult]:
    timeout = httpx.Timeout(settings.CLAWDBOT_PROBE_TIMEOUT_S)
    async with httpx.AsyncClient(timeout=timeout) as client:
        return await asyncio.gather(
            *(probe(client, url, kind, models) for url, kind, models in targets)
        )


def probe_and_record(
    nodes: list[Node], then: Callable[[ProbeOutcome], None]
) -> list[tuple[ProbeOutcome, ProbeResult]]:
    """Probe concurrently (network first, no transaction held), then record each result and
    hand it to `then` (`tasks.follow_up`: what a new state calls for, a warm-up or healing)
    before recording the next, so a later failure cannot lose an earlier node's follow-up.
    `nodes` should come with `deployments__profile` prefetched."""
    targets = [
        (n.base_url, n.kind, [d.profile.upstream_model for d in n.deployments.all()]) for n in nodes
    ]
    results = asyncio.run(_probe_all(targets))
    record_pass_ratios({n.name: r.ok for n, r in zip(nodes, results, strict=True)})
    recorded = []
    for node, result in zip(nodes, results, strict=True):
        # A node with prefetch profiles turns READY only after they are loaded again.
        needs_warmup = any(d.profile.prefetch for d in node.deployments.all())
        outcome = node_record_probe(node_id=node.pk, result=result, hold_ready=needs_warmup)
        if outcome is None:
            continue
        recorded.append((outcome, result))
        then(outcome)
    live_events.announce_load([node.name for node in nodes])
    return recorded


PASS_RATIO_ALPHA = 0.1  # ≈ the last 10-20 probes


def record_pass_ratios(passed: dict[str, bool]) -> None:
    """Each node's recent probe pass ratio (an exponential average), for the routing weight's
    health factor. Probe cycles never overlap (a lock), so read-modify-write is safe here."""
    if not passed:
        return
    client = sync_client()
    names = list(passed)
    old = client.hmget(redis_keys.HEALTH, names)
    updated = {
        name: round(
            (1 - PASS_RATIO_ALPHA) * (float(prev) if prev is not None else 1.0)
            + PASS_RATIO_ALPHA * (1.0 if passed[name] else 0.0),
            4,
        )
        for name, prev in zip(names, old, strict=True)
    }
    client.hset(redis_keys.HEALTH, mapping=cast(Any, updated))  # redis-py's Mapping is invariant
