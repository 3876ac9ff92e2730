"""Control-plane tasks run by the main Celery worker (beat schedules them; see settings).
Tasks on a GPU host's own queue (`node.<name>`) live in nodes.agent."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from alerts import events as alert_events
from alerts import services as alerts
from clawdbot_site import redis_keys
from clawdbot_site.celery import app
from clawdbot_site.redis_client import sync_client
from nodes import (
    load_jobs,  # noqa: F401  (registers the load tasks on this worker)
    telemetry_store,
    warm_lock,
)
from nodes.agent import queue_for
from nodes.choices import NodeState
from nodes.healing import HealPolicy, decide
from nodes.load_scraper import Target, scrape_and_store
from nodes.model_loads import NodeLoadResult, warm_and_record
from nodes.models import GpuSample, HealEvent, Node, ProbeRecord
from nodes.probe_runner import probe_and_record
from nodes.server_kinds import kind_of, spec
from nodes.services import ProbeOutcome, node_mark_state

log = logging.getLogger(__name__)
PROBE_LOCK = redis_keys.PROBE_LOCK


@shared_task(ignore_result=True, soft_time_limit=30, time_limit=40)
def probe_nodes() -> int:
    """Probe every enabled node once. Overlapping beats (a slow cycle, two beat processes)
    must not double-probe, so a cycle claims a lock that lapses just before the next one."""
    interval_ms = int(settings.CLAWDBOT_PROBE_INTERVAL_S * 1000)
    if not sync_client().set(PROBE_LOCK, "1", nx=True, px=max(100, int(interval_ms * 0.9))):
        return 0
    started = time.monotonic()
    nodes = list(Node.objects.filter(enabled=True).prefetch_related("deployments__profile"))
    recorded = probe_and_record(nodes, then=follow_up)
    changed = [o for o, _ in recorded if o.changed]
    for outcome in changed:
        log.warning(
            "node %s: %s → %s (%s)",
            outcome.node.name,
            outcome.previous_state,
            outcome.node.state,
            outcome.node.last_probe_error or "ok",
        )
    log.info("probed %d nodes in %.0f ms", len(nodes), (time.monotonic() - started) * 1000)
    return len(recorded)


def follow_up(outcome: ProbeOutcome) -> None:
    """What a recorded probe calls for: the warm-up of a node held back for its prefetch
    profiles, healing for a node that just turned DEGRADED (both after the commit)."""
    node = outcome.node
    if outcome.changed:
        reason = node.last_probe_error or "probes pass"
        event = alert_events.node_state(node.name, outcome.previous_state, node.state, reason)
        alerts.notify(event)
    if outcome.held_for_warmup and not warm_lock.is_warming(node.name):
        transaction.on_commit(lambda: warm_then_ready.delay(node.pk))
    if outcome.changed and node.state == NodeState.DEGRADED:
        transaction.on_commit(lambda: heal_node.delay(node.pk, "turned DEGRADED"))


@shared_task(ignore_result=True, soft_time_limit=900, time_limit=930)
def warm_then_ready(node_id: int) -> None:
    """Load a recovering node's prefetch profiles, then let it serve again."""
    node = Node.objects.filter(pk=node_id).first()
    if node is None or not warm_lock.claim(node.name, settings.CLAWDBOT_WARMUP_TIMEOUT_S + 60):
        return
    try:
        deployments = list(
            node.deployments.select_related("node", "profile").filter(profile__prefetch=True)
        )
        results: list[NodeLoadResult] = []
        warm_and_record(deployments, results.append)
        failed = [f"{r['model']}: {r['error']}" for r in results if not r["ok"]]
        node.refresh_from_db()
        if failed:
            error = "warmup failed: " + "; ".join(failed)
            node_mark_state(node=node, state=node.state, error=error)
            alerts.notify(alert_events.node_state(node.name, node.state, node.state, error))
            return
        if node.consecutive_failures == 0 and node.state != NodeState.READY:
            before = node.state
            node_mark_state(node=node, state=NodeState.READY)
            log.warning("node %s: READY after warming %d profile(s)", node.name, len(results))
            reason = f"prefetch profiles loaded ({len(results)})"
            alerts.notify(alert_events.node_state(node.name, before, NodeState.READY, reason))
    finally:
        warm_lock.release(node.name)


@shared_task(ignore_result=True, soft_time_limit=30, time_limit=40)
def heal_node(node_id: int, trigger: str) -> None:
    """Restart a failing node's backend through its agent, if the policy allows it now."""
    node = Node.objects.filter(pk=node_id).first()
    if node is None:
        return
    # One decision at a time per node: two triggers racing could both see "allowed".
    lock = redis_keys.heal_lock(node.name)
    if not sync_client().set(lock, "1", nx=True, ex=30):
        return
    try:
        _heal(node, trigger)
    finally:
        sync_client().delete(lock)


def _heal(node: Node, trigger: str) -> None:
    now = timezone.now()
    attempts = list(
        node.heal_events.filter(
            started_at__gte=now - timedelta(hours=1),
            outcome__in=[
                HealEvent.Outcome.PENDING,
                HealEvent.Outcome.RECOVERED,
                HealEvent.Outcome.FAILED,
            ],
        ).values_list("started_at", flat=True)
    )
    decision = decide(
        now=now,
        attempts=attempts,
        has_command=bool(node.restart_command.strip()),
        agent_alive=bool(telemetry_store.agents_alive([node.name])),
        node_name=node.name,
        policy=HealPolicy(
            max_per_hour=settings.CLAWDBOT_HEAL_MAX_PER_HOUR,
            backoff_s=settings.CLAWDBOT_HEAL_BACKOFF_S,
        ),
    )
    if not decision.restart:
        HealEvent.objects.create(
            node=node,
            started_at=now,
            finished_at=now,
            trigger=trigger,
            outcome=HealEvent.Outcome.SKIPPED,
            detail=decision.reason,
        )
        log.warning("node %s: no self-heal: %s", node.name, decision.reason)
        return
    event = HealEvent.objects.create(
        node=node, started_at=now, trigger=trigger, action=f"restart: {node.restart_command}"
    )
    wait_s = settings.CLAWDBOT_HEAL_WAIT_S
    transaction.on_commit(
        lambda: app.send_task(
            "nodes.agent.restart_backend",
            args=[node.name, node.restart_command, node.base_url, node.kind, wait_s],
            queue=queue_for(node.name),
            expires=60,
            link=record_heal_result.s(event.pk),
            link_error=record_heal_failure.si(event.pk),
        )
    )
    log.warning("node %s: self-heal started (%s)", node.name, node.restart_command)


@shared_task(ignore_result=True, soft_time_limit=30, time_limit=40)
def record_heal_result(result: dict[str, Any], event_id: int) -> None:
    event = HealEvent.objects.filter(pk=event_id).select_related("node").first()
    if event is None:
        return
    ok = bool(result.get("ok"))
    event.outcome = HealEvent.Outcome.RECOVERED if ok else HealEvent.Outcome.FAILED
    event.finished_at = timezone.now()
    parts = [
        f"backend was {'up' if result.get('was_up') else 'down'} before the restart",
        f"exit status {result.get('exit_status')}",
    ]
    if result.get("recovered_after_s") is not None:
        parts.append(f"answering again after {result['recovered_after_s']:.1f} s")
    if result.get("error"):
        parts.append(str(result["error"]))
    output = str(result.get("output") or "").strip()
    event.detail = "; ".join(parts) + (f"\n\n{output[-2000:]}" if output else "")
    event.save(update_fields=["outcome", "finished_at", "detail"])
    alerts.notify(alert_events.heal_outcome(event.node.name, ok, "; ".join(parts)))
    # Back to READY goes through the probes: consecutive successes, then prefetch warmup.


@shared_task(ignore_result=True, soft_time_limit=30, time_limit=40)
def record_heal_failure(event_id: int) -> None:
    detail = "the restart task failed on the agent (see the agent's log)"
    failed = HealEvent.objects.filter(pk=event_id, outcome=HealEvent.Outcome.PENDING).update(
        outcome=HealEvent.Outcome.FAILED, finished_at=timezone.now(), detail=detail
    )
    node = Node.objects.filter(heal_events=event_id).values_list("name", flat=True).first()
    if failed and node is not None:
        alerts.notify(alert_events.heal_outcome(node, False, detail))


@shared_task(ignore_result=True, soft_time_limit=10, time_limit=15)
def dispatch_telemetry() -> int:
    """Ask every node with a live agent for a GPU reading (the agent publishes it to Redis)."""
    commands = dict(Node.objects.filter(enabled=True).values_list("name", "restart_command"))
    alive = telemetry_store.agents_alive(commands)
    expires = settings.CLAWDBOT_TELEMETRY_INTERVAL_S * 0.9
    for name in sorted(alive):
        app.send_task(
            "nodes.agent.collect_telemetry",
            args=[name],
            kwargs={"restart_command": commands[name]} if commands[name] else {},
            queue=queue_for(name),
            expires=expires,
            ignore_result=True,
        )
    return len(alive)


@shared_task(ignore_result=True, soft_time_limit=10, time_limit=15)
def scrape_server_load() -> int:
    """Read each enabled node's load gauges from its server's /metrics into Redis, for routing,
    the admin and /metrics. Kinds without gauges (Ollama, a generic server) are not asked."""
    targets = [
        Target(name, url, kind_of(api_kind, server_kind))
        for name, url, api_kind, server_kind in Node.objects.filter(enabled=True).values_list(
            "name", "base_url", "api_kind", "server_kind"
        )
        if spec(kind_of(api_kind, server_kind)).metrics
    ]
    results = scrape_and_store(targets, settings.CLAWDBOT_SERVER_LOAD_TIMEOUT_S)
    return sum(1 for r in results if r.load is not None)


@shared_task(ignore_result=True, soft_time_limit=30, time_limit=40)
def record_telemetry_history() -> int:
    """Keep one sample per GPU per minute of each node's latest reading."""
    nodes = {n.name: n for n in Node.objects.all()}
    readings = telemetry_store.latest(list(nodes))
    now = timezone.now()
    samples = []
    for name, reading in readings.items():
        if not reading or not reading.get("nvml"):
            continue
        for gpu in reading.get("gpus") or []:
            samples.append(
                GpuSample(
                    node=nodes[name],
                    at=now,
                    gpu_index=gpu.get("index") or 0,
                    name=str(gpu.get("name") or "")[:100],
                    utilisation_pct=gpu.get("utilisation_gpu_pct"),
                    memory_used_mib=gpu.get("memory_used_mib"),
                    memory_total_mib=gpu.get("memory_total_mib"),
                    temperature_c=gpu.get("temperature_c"),
                    power_w=gpu.get("power_draw_w"),
                )
            )
    GpuSample.objects.bulk_create(samples)
    return len(samples)


@shared_task(ignore_result=True, soft_time_limit=120, time_limit=150)
def prune_history() -> dict[str, int]:
    now = timezone.now()
    probes, _ = ProbeRecord.objects.filter(
        at__lt=now - timedelta(hours=settings.CLAWDBOT_PROBE_HISTORY_HOURS)
    ).delete()
    samples, _ = GpuSample.objects.filter(
        at__lt=now - timedelta(days=settings.CLAWDBOT_TELEMETRY_HISTORY_DAYS)
    ).delete()
    # A restart whose agent never answered (it died, or the message expired) is not pending.
    stale = HealEvent.objects.filter(
        outcome=HealEvent.Outcome.PENDING,
        started_at__lt=now - timedelta(seconds=settings.CLAWDBOT_HEAL_WAIT_S + 600),
    ).update(
        outcome=HealEvent.Outcome.FAILED,
        finished_at=now,
        detail="no answer from the node's agent",
    )
    return {"probes": probes, "samples": samples, "stale_heals": stale}
