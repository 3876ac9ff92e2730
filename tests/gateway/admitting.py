"""Driving the admission scripts directly against the test Redis: a node's route, an
admission object on its own lean client, and one admission call with the usual defaults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from django.conf import settings

from clawdbot_site.redis_client import async_client
from gateway.admission import Admission, EjectionPolicy, Verdict
from gateway.routing import Request as RoutingRequest
from gateway.snapshot import NodeView, Route
from wire.resp import RespClient


def route(
    name: str,
    max_concurrent: int = 4,
    queue_size: int = 0,
    gpu: str = "A100",
    weight: float = 1.0,
    prior: float = 0.0,
) -> Route:
    """`weight` is also the speed prior unless `prior` is given (see routing.admit_args)."""
    node = NodeView(
        id=1, name=name, base_url="http://127.0.0.1:9", api_kind="ollama", gpu_type=gpu,
        gpu_count=1, total_vram_gb=80.0, max_concurrent=max_concurrent, queue_size=queue_size,
        state="READY", enabled=True, draining=False, weight=1.0, prior=prior,
    )  # fmt: skip
    return Route(node=node, weight=weight)


@asynccontextmanager
async def admission_on(
    url: str | None = None, policy: EjectionPolicy | None = None
) -> AsyncIterator[Admission]:
    resp = RespClient(url or settings.REDIS_URL)
    admission = Admission(async_client(), resp, policy)
    await admission.load()
    try:
        yield admission
    finally:
        resp.close()


async def admit(
    admission: Admission,
    lease: str,
    *routes: Route,
    queued_at: str = "",
    prefer_gpu: str = "",
    request: RoutingRequest | None = None,
) -> Verdict:
    """One admission call without rate limits."""
    return await admission.admit(
        lease=lease, routes=list(routes), key_id=None, rpm=None, tpm=None, estimated_tokens=0,
        check_rate=False, queued_at=queued_at, prefer_gpu=prefer_gpu, request=request,
    )  # fmt: skip
