"""Writes on nodes, profiles and deployments. Commands, admin actions and tasks call these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from nodes import live_events
from nodes.choices import NodeState
from nodes.discovery import DiscoveredModel, same_model
from nodes.models import Deployment, ModelProfile, Node, ProbeRecord
from nodes.probes import ProbeResult
from nodes.routing_version import bump_after_commit
from nodes.statemachine import Health, Thresholds, after_probe
from nodes.warmup import WarmupResult

DEFAULT_CONTEXT_WINDOW = 8192
MAX_DEFAULT_CONTEXT_WINDOW = 32768
MAX_DEFAULT_OUTPUT_TOKENS = 4096


@transaction.atomic
def node_upsert(*, name: str, **fields: Any) -> tuple[Node, bool]:
    """Create the node or update the given fields; validated before saving."""
    node = Node.objects.select_for_update().filter(name=name).first()
    created = node is None
    if node is None:
        node = Node(name=name)
    for attr, value in fields.items():
        setattr(node, attr, value)
    node.full_clean()
    node.save()
    return node, created


def nodes_set_draining(*, node_ids: list[int], draining: bool) -> int:
    """Drain (or undrain) nodes; returns how many changed. Gateways see it within a second."""
    count = Node.objects.filter(pk__in=node_ids).update(
        draining=draining, updated_at=timezone.now()
    )
    bump_after_commit()
    transaction.on_commit(lambda: _announce_draining(node_ids))
    return count


def _announce_draining(node_ids: list[int]) -> None:
    for node in Node.objects.filter(pk__in=node_ids):
        live_events.send(live_events.node_state(node, previous=node.state))


@dataclass(frozen=True)
class ProbeOutcome:
    node: Node
    previous_state: str
    held_for_warmup: bool  # the probe said READY, but prefetch profiles must load first

    @property
    def changed(self) -> bool:
        return self.node.state != self.previous_state


def thresholds_from_settings() -> Thresholds:
    return Thresholds(
        degrade_after=settings.CLAWDBOT_DEGRADE_AFTER,
        down_after=settings.CLAWDBOT_DOWN_AFTER,
        recover_after=settings.CLAWDBOT_RECOVER_AFTER,
    )


@transaction.atomic
def node_record_probe(
    *, node_id: int, result: ProbeResult, hold_ready: bool = False, history: bool = True
) -> ProbeOutcome | None:
    """Apply one probe result through the state machine; None when the node is gone.

    With `hold_ready`, a node about to (re)turn READY keeps its state: its prefetch profiles
    are warmed first and `node_mark_state` promotes it afterwards."""
    node = Node.objects.select_for_update().filter(pk=node_id).first()
    if node is None:
        return None
    previous = node.state
    health = after_probe(
        Health(node.state, node.consecutive_failures, node.consecutive_successes),
        result.ok,
        thresholds_from_settings(),
    )
    held = hold_ready and health.state == NodeState.READY and previous != NodeState.READY
    now = timezone.now()
    fields = ["consecutive_failures", "consecutive_successes", "last_probe_at", "last_probe_error"]
    if not held and health.state != previous:
        node.state = health.state
        node.state_changed_at = now
        fields += ["state", "state_changed_at", "updated_at"]
    node.consecutive_failures = health.consecutive_failures
    node.consecutive_successes = health.consecutive_successes
    node.last_probe_at = now
    node.last_probe_error = result.error or ("warming prefetch profiles" if held else "")
    # Only a state change touches routing: the version bump keys off the saved fields.
    node.save(update_fields=fields)
    if history:
        ProbeRecord.objects.create(
            node=node,
            at=now,
            ok=result.ok,
            latency_ms=result.latency_ms,
            error=result.error[:500],
            state_after=node.state,
        )
    live_events.send_after_commit(
        live_events.probe(node, ok=result.ok, latency_ms=result.latency_ms, error=result.error)
    )
    if node.state != previous:
        live_events.send_after_commit(live_events.node_state(node, previous))
    return ProbeOutcome(node=node, previous_state=previous, held_for_warmup=held)


def node_mark_state(*, node: Node, state: str, error: str = "") -> None:
    now = timezone.now()
    previous = node.state
    changed = previous != state
    node.state = state
    node.last_probe_error = error
    fields = ["state", "last_probe_error", "updated_at"]
    if changed:
        node.state_changed_at = now
        fields.append("state_changed_at")
    if state == NodeState.READY:
        node.consecutive_failures = 0
        fields.append("consecutive_failures")
    node.save(update_fields=fields)
    if changed:
        live_events.send_after_commit(live_events.node_state(node, previous))


def default_context_window(discovered: int | None, requested: int | None) -> int:
    """A new profile's window: what the operator asked for, else the model's length capped
    (num_ctx is allocated in VRAM on every load, so the trained maximum is rarely wanted)."""
    if requested:
        return min(requested, discovered) if discovered else requested
    if discovered:
        return min(discovered, MAX_DEFAULT_CONTEXT_WINDOW)
    return DEFAULT_CONTEXT_WINDOW


@transaction.atomic
def profile_for_discovered(
    *, model: DiscoveredModel, context_window: int | None = None, prefetch: bool | None = None
) -> tuple[ModelProfile, bool]:
    """The profile serving an upstream model: an existing one (matched on its upstream name,
    then its model id) keeps its settings; otherwise a new profile named after the model."""
    existing = next(
        (p for p in ModelProfile.objects.all() if same_model(p.upstream_model, model.name)), None
    )
    if existing is None:
        existing = ModelProfile.objects.filter(model_id=model.name).first()
    if existing is not None:
        if prefetch is not None and existing.prefetch != prefetch:
            existing.prefetch = prefetch
            existing.save(update_fields=["prefetch", "updated_at"])
        return existing, False
    window = default_context_window(model.context_length, context_window)
    profile = ModelProfile(
        model_id=model.name,
        upstream_model=model.name,
        display_name=model.name,
        context_window=window,
        max_output_tokens=min(MAX_DEFAULT_OUTPUT_TOKENS, window),
        prefetch=bool(prefetch),
    )
    profile.full_clean()
    profile.save()
    return profile, True


def deployment_ensure(*, node: Node, profile: ModelProfile) -> tuple[Deployment, bool]:
    deployment = Deployment(node=node, profile=profile)
    existing = Deployment.objects.filter(node=node, profile=profile).first()
    if existing is not None:
        return existing, False
    deployment.full_clean()
    deployment.save()
    return deployment, True


def deployment_record_warmup(*, deployment: Deployment, result: WarmupResult) -> None:
    deployment.loaded = result.ok
    deployment.last_load_ms = result.load_ms
    deployment.last_load_error = result.error
    if result.ok:
        deployment.loaded_at = timezone.now()
    deployment.save(update_fields=["loaded", "last_load_ms", "last_load_error", "loaded_at"])
