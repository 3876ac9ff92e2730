"""Celery tasks that load model profiles on nodes: an operator's runtime load
(`POST /v1/admin/models/load`) and the prefetch warm-up after deployments are added. They run
on the main worker (queue `celery`) and reach GPU hosts through their agents' queues.

A load task is also remembered in Redis (`clawdbot:loadtask:<id>`: model, nodes) for as long
as Celery keeps its result, so the status endpoint can tell a queued task from an id that was
never a load task, and never shows other tasks' results.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any, TypedDict

import orjson
from celery import Task, shared_task
from django.conf import settings
from django.db import transaction

from clawdbot_site import redis_keys
from clawdbot_site.celery import queue_quietly
from clawdbot_site.redis_client import sync_client
from nodes.model_loads import NodeLoadResult, load_profile, warm_prefetch
from nodes.models import ModelProfile, Node

# A load nobody picked up within this long is dropped: the operator has long moved on.
LOAD_EXPIRES_S = 600.0
PREFETCH_EXPIRES_S = 600.0
# Nodes warm in parallel, so a load takes about one target's worst case: a preload and a
# warmup prompt, each under the warm-up timeout.
_ONE_TARGET_S = 2 * settings.CLAWDBOT_WARMUP_TIMEOUT_S
LOAD_SOFT_LIMIT_S = int(_ONE_TARGET_S + 120)
# A prefetch may queue several profiles on one node, warmed one after the other.
PREFETCH_SOFT_LIMIT_S = int(4 * _ONE_TARGET_S + 120)


class LoadProgress(TypedDict):
    done: int
    total: int
    results: list[NodeLoadResult]


class LoadStatus(TypedDict):
    task_id: str
    state: str
    model: str
    nodes: list[str]
    done: int
    total: int
    results: list[NodeLoadResult]
    error: str | None


@shared_task(
    bind=True,
    name="nodes.load_tasks.load_model",
    soft_time_limit=LOAD_SOFT_LIMIT_S,
    time_limit=LOAD_SOFT_LIMIT_S + 30,
)
def load_model(self: Task, profile_id: int, node_names: list[str]) -> LoadProgress:
    """Load a profile on the named nodes, publishing PROGRESS after each node. Running it
    twice is harmless: loading a loaded model only refreshes its keep-alive."""
    total = len(dict.fromkeys(node_names))
    results: list[NodeLoadResult] = []

    def progress(result: NodeLoadResult) -> None:
        results.append(result)
        _publish(self, {"done": len(results), "total": total, "results": results})

    # PROGRESS at once, so the status tells "a worker has it" from "still queued".
    _publish(self, {"done": 0, "total": total, "results": []})
    load_profile(profile_id=profile_id, node_names=node_names, progress=progress)
    return {"done": len(results), "total": total, "results": results}


@shared_task(
    name="nodes.load_tasks.warm_deployments",
    soft_time_limit=PREFETCH_SOFT_LIMIT_S,
    time_limit=PREFETCH_SOFT_LIMIT_S + 30,
)
def warm_deployments(deployment_ids: list[int]) -> dict[str, Any]:
    """Warm newly added deployments of prefetch profiles; others (and ids that are gone)
    are skipped."""
    results, skipped = warm_prefetch(deployment_ids)
    return {"done": len(results), "total": len(results), "results": results, "skipped": skipped}


def schedule_prefetch_warmup(deployment_ids: Iterable[int]) -> None:
    """Warm the prefetch profiles among these deployments once the current transaction
    commits (the worker must see the rows). Call it wherever deployments are added."""
    ids = sorted({int(pk) for pk in deployment_ids})
    if not ids:
        return

    # Unqueued, the deployments are still saved: they load on their first request (or the
    # next prefetch) instead. Failing the admin's save over it would help nobody.
    transaction.on_commit(
        lambda: queue_quietly(
            warm_deployments,
            args=[ids],
            what=f"the prefetch warm-up of deployments {ids}",
            expires=PREFETCH_EXPIRES_S,
        )
    )


def start_load(*, profile: ModelProfile, nodes: list[Node]) -> str:
    """Enqueue `load_model` and remember it for the status endpoint; returns the task id."""
    task_id = str(uuid.uuid4())
    names = [node.name for node in nodes]
    record = {"model": profile.model_id, "nodes": names}
    # Written before the task is sent, so a status request right after the answer finds it.
    sync_client().set(
        redis_keys.load_job(task_id), orjson.dumps(record), ex=int(settings.CELERY_RESULT_EXPIRES)
    )
    load_model.apply_async(args=[profile.pk, names], task_id=task_id, expires=LOAD_EXPIRES_S)
    return task_id


def load_status(task_id: str) -> LoadStatus | None:
    """Where a load task stands, or None when `task_id` is no (longer a) known load task."""
    raw = sync_client().get(redis_keys.load_job(task_id)) if len(task_id) <= 64 else None
    if raw is None:
        return None
    record = orjson.loads(raw)
    names: list[str] = record["nodes"]
    status: LoadStatus = {
        "task_id": task_id,
        "state": "PENDING",
        "model": record["model"],
        "nodes": names,
        "done": 0,
        "total": len(names),
        "results": [],
        "error": None,
    }
    # One read of the result backend, so state and details come from the same update.
    meta = load_model.backend.get_task_meta(task_id)
    state, info = meta.get("status", "PENDING"), meta.get("result")
    if state in ("PROGRESS", "SUCCESS") and isinstance(info, dict):
        status["state"] = state
        status["done"] = int(info.get("done", 0))
        status["total"] = int(info.get("total", status["total"]))
        status["results"] = list(info.get("results", []))
    elif state in ("STARTED", "RETRY"):
        status["state"] = "PROGRESS"
    elif state == "REVOKED":
        status["state"] = "FAILURE"
        status["error"] = (
            f"the task was dropped: no worker picked it up within {LOAD_EXPIRES_S:g} s"
        )
    elif state == "FAILURE":
        status["state"] = "FAILURE"
        # The exception's message only: a traceback is for the worker's log.
        status["error"] = f"the load task failed: {type(info).__name__}: {info}"
    return status


def _publish(task: Task, meta: LoadProgress) -> None:
    if task.request.id:  # None when called directly rather than through a worker
        task.update_state(state="PROGRESS", meta=meta)
