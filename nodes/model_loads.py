"""Loading model profiles on nodes at runtime: making sure each is deployed where placement
allows (`nodes.placement`), and warming it through the node's agent or, without a live agent,
straight from the control plane over HTTP.

Everything that needs the database runs on the calling thread; only the warm-ups themselves
run in parallel threads (one per node), so a slow cold load on one node does not hold up the
others and no thread but the caller's opens a database connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict
from typing import TypedDict

import httpx
from celery.result import AsyncResult
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from nodes import telemetry_store
from nodes.agent import queue_for, warm_models
from nodes.models import Deployment, ModelProfile, Node
from nodes.placement import LoadRequestError, default_nodes, telemetry_memory, vram_shortfall
from nodes.services import deployment_ensure, deployment_record_warmup
from nodes.warmup import WarmTarget, WarmupResult, warm

log = logging.getLogger(__name__)

# How often the caller looks at agents' results while direct warm-ups are running.
POLL_S = 0.2
# Slack over the HTTP timeouts for queueing, the agent's own start-up and result delivery.
AGENT_SLACK_S = 30.0
MAX_PARALLEL_NODES = 8


class NodeLoadResult(TypedDict):
    node: str
    model: str
    ok: bool
    load_ms: int | None
    prompt_ms: int | None
    error: str
    # "agent" or "direct"; None when nothing was sent (the node was refused before warming).
    via: str | None


Progress = Callable[[NodeLoadResult], None]


def load_profile(
    *, profile_id: int, node_names: list[str] | None, progress: Progress | None = None
) -> list[NodeLoadResult]:
    """Deploy (when missing) and warm a profile on nodes; one result per node, each also
    handed to `progress` as soon as it is known. A node that is gone, cannot hold the
    profile or fails to warm gets a failed result; the others go on."""
    results: list[NodeLoadResult] = []

    def emit(result: NodeLoadResult) -> None:
        results.append(result)
        if progress is not None:
            progress(result)

    profile = ModelProfile.objects.filter(pk=profile_id).first()
    if profile is None:
        for name in dict.fromkeys(node_names or []):
            emit(_failed(name, f"profile #{profile_id}", "the model profile no longer exists"))
        return results
    if node_names is None:
        try:
            nodes = default_nodes(profile)
        except LoadRequestError:
            return []
    else:
        found = {node.name: node for node in Node.objects.filter(name__in=node_names)}
        nodes = []
        for name in dict.fromkeys(node_names):
            if name in found:
                nodes.append(found[name])
            else:
                emit(_failed(name, profile.model_id, "the node no longer exists"))

    # Checked again here: the config or the GPUs may have changed since the request.
    memory = telemetry_memory(nodes)
    deployments: list[Deployment] = []
    for node in nodes:
        problem = vram_shortfall(profile, node, memory.get(node.name))
        if problem is not None:
            emit(_failed(node.name, profile.model_id, problem))
            continue
        try:
            deployment = _ensure_deployment(node, profile)
        except ValidationError as exc:
            emit(_failed(node.name, profile.model_id, " ".join(exc.messages)))
            continue
        deployments.append(deployment)
    warm_and_record(deployments, emit)
    return results


def warm_prefetch(
    deployment_ids: Iterable[int], progress: Progress | None = None
) -> tuple[list[NodeLoadResult], list[int]]:
    """Warm the given deployments whose profile is marked prefetch (and whose node and
    profile are enabled); returns (results, ids skipped). Ids that are gone are skipped."""
    ids = sorted(set(deployment_ids))
    deployments = list(
        Deployment.objects.select_related("node", "profile").filter(
            pk__in=ids, profile__prefetch=True, profile__enabled=True, node__enabled=True
        )
    )
    skipped = sorted(set(ids) - {d.pk for d in deployments})
    results: list[NodeLoadResult] = []

    def emit(result: NodeLoadResult) -> None:
        results.append(result)
        if progress is not None:
            progress(result)

    memory = telemetry_memory(d.node for d in deployments)
    fitting = []
    for deployment in deployments:
        problem = vram_shortfall(
            deployment.profile, deployment.node, memory.get(deployment.node.name)
        )
        if problem is None:
            fitting.append(deployment)
        else:
            emit(_failed(deployment.node.name, deployment.profile.model_id, problem))
    warm_and_record(fitting, emit)
    return results, skipped


def warm_and_record(deployments: list[Deployment], emit: Progress) -> None:
    """Warm each deployment and record the outcome on it. Nodes are warmed in parallel, the
    models of one node one after the other (two cold loads on the same GPUs only slow each
    other down). A node with a live agent is warmed by it; any other node directly."""
    by_node: dict[str, list[Deployment]] = {}
    for deployment in deployments:
        by_node.setdefault(deployment.node.name, []).append(deployment)
    if not by_node:
        return
    alive = telemetry_store.agents_alive(by_node)
    # A target makes at most two requests (preload, warmup prompt), each under this timeout.
    per_target_s = 2 * settings.CLAWDBOT_WARMUP_TIMEOUT_S

    agent_calls: dict[str, tuple[AsyncResult, float]] = {}
    for name in sorted(alive):
        targets = [asdict(WarmTarget.of(d)) for d in by_node[name]]
        wait_s = per_target_s * len(targets) + AGENT_SLACK_S
        # `expires`: should the agent be down after all, the job is dropped rather than run
        # long after this caller has reported it as failed.
        call = warm_models.apply_async(args=[name, targets], queue=queue_for(name), expires=wait_s)
        agent_calls[name] = (call, time.monotonic() + wait_s)

    direct = [name for name in by_node if name not in alive]
    with ThreadPoolExecutor(
        max_workers=max(1, min(MAX_PARALLEL_NODES, len(direct))), thread_name_prefix="warm"
    ) as pool:
        futures: dict[Future[list[WarmupResult]], str] = {
            pool.submit(_warm_directly, [WarmTarget.of(d) for d in by_node[name]]): name
            for name in direct
        }
        while futures or agent_calls:
            if futures:
                done, _ = wait(futures, timeout=POLL_S, return_when=FIRST_COMPLETED)
            else:
                done = set()
                time.sleep(POLL_S)  # only agents left: poll their results
            for future in done:
                name = futures.pop(future)
                for deployment, result in zip(by_node[name], future.result(), strict=True):
                    emit(_record(deployment, result, "direct"))
            for name, (call, deadline) in list(agent_calls.items()):
                outcomes = _agent_outcomes(call, deadline, len(by_node[name]))
                if outcomes is None:
                    continue
                del agent_calls[name]
                for deployment, result in zip(by_node[name], outcomes, strict=True):
                    emit(_record(deployment, result, "agent"))


def _agent_outcomes(call: AsyncResult, deadline: float, count: int) -> list[WarmupResult] | None:
    """The agent's results once it answered (or failure results once it is too late); None
    while it is still working. Reads the result backend once, never blocks."""
    if call.ready():
        if call.successful() and isinstance(call.result, list) and len(call.result) == count:
            return [
                WarmupResult(
                    ok=bool(o.get("ok")),
                    load_ms=int(o.get("load_ms") or 0),
                    prompt_ms=o.get("prompt_ms"),
                    error=str(o.get("error") or ""),
                )
                for o in call.result
            ]
        error = f"the agent's warm task failed: {call.result!r}"
        return [WarmupResult(False, 0, error=error)] * count
    if time.monotonic() < deadline:
        return None
    call.revoke()  # still queued: never start it; already running: it finishes unobserved
    error = "the node's agent did not report back in time (is it still running?)"
    return [WarmupResult(False, 0, error=error)] * count


def _warm_directly(targets: list[WarmTarget]) -> list[WarmupResult]:
    return asyncio.run(_warm_in_turn(targets))


async def _warm_in_turn(targets: list[WarmTarget]) -> list[WarmupResult]:
    timeout = httpx.Timeout(settings.CLAWDBOT_WARMUP_TIMEOUT_S, connect=3.0)
    async with httpx.AsyncClient(timeout=timeout) as client:
        return [await warm(client, target) for target in targets]


def _record(deployment: Deployment, result: WarmupResult, via: str) -> NodeLoadResult:
    node, model = deployment.node.name, deployment.profile.model_id
    # The deployment may have been deleted during a long cold load; nothing to record then.
    if Deployment.objects.filter(pk=deployment.pk).exists():
        deployment_record_warmup(deployment=deployment, result=result)
    if result.ok:
        log.info("warmed %s on %s via %s in %d ms", model, node, via, result.load_ms)
    else:
        log.warning("warming %s on %s via %s failed: %s", model, node, via, result.error)
    return {
        "node": node,
        "model": model,
        "ok": result.ok,
        "load_ms": result.load_ms,
        "prompt_ms": result.prompt_ms,
        "error": result.error,
        "via": via,
    }


def _ensure_deployment(node: Node, profile: ModelProfile) -> Deployment:
    try:
        deployment, _created = deployment_ensure(node=node, profile=profile)
    except IntegrityError:
        # Another request created it between the check and the insert.
        deployment = Deployment.objects.get(node=node, profile=profile)
    # The lookups above return a bare row; the warm-up needs its node and profile.
    deployment.node, deployment.profile = node, profile
    return deployment


def _failed(node: str, model: str, error: str) -> NodeLoadResult:
    return {
        "node": node,
        "model": model,
        "ok": False,
        "load_ms": None,
        "prompt_ms": None,
        "error": error,
        "via": None,
    }
