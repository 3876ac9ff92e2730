"""Probe several nodes at once and record each result through the state machine."""

from __future__ import annotations

import asyncio

import httpx
from django.conf import settings

from nodes.models import Node
from nodes.probes import ProbeResult, probe
from nodes.services import node_record_probe


async def _probe_all(targets: list[tuple[str, str, list[str]]]) -> list[ProbeResult]:
    timeout = httpx.Timeout(settings.CLAWDBOT_PROBE_TIMEOUT_S)
    async with httpx.AsyncClient(timeout=timeout) as client:
        return await asyncio.gather(
            *(probe(client, url, kind, models) for url, kind, models in targets)
        )


def probe_and_record(nodes: list[Node]) -> list[tuple[Node, ProbeResult]]:
    """Probe concurrently (network first, no transaction held), then record each result."""
    targets = [
        (n.base_url, n.api_kind, [d.profile.upstream_model for d in n.deployments.all()])
        for n in nodes
    ]
    results = asyncio.run(_probe_all(targets))
    recorded = []
    for node, result in zip(nodes, results, strict=True):
        updated = node_record_probe(node_id=node.pk, result=result)
        if updated is not None:
            recorded.append((updated, result))
    return recorded
