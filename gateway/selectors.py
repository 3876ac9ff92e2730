"""The one ORM read behind a routing snapshot: the whole routing config in a fixed handful of
queries, whatever its size (tests/gateway/test_selectors.py pins the count)."""

from __future__ import annotations

import time

from django.conf import settings
from django.utils import timezone

from gateway.models import ApiKey
from gateway.snapshot import KeyView, NodeView, ProfileView, Route, Snapshot, fits
from nodes.models import Deployment, ModelProfile, Node
from nodes.weights import node_weight


def build_snapshot(version: int) -> Snapshot:
    """Read the whole routing config (a fixed handful of queries)."""
    nodes = {
        n.name: NodeView(
            id=n.pk,
            name=n.name,
            base_url=n.base_url.rstrip("/"),
            api_kind=n.api_kind,
            gpu_type=n.gpu_type,
            gpu_count=n.gpu_count,
            total_vram_gb=n.total_vram_gb,
            max_concurrent=n.max_concurrent,
            queue_size=n.queue_size,
            state=n.state,
            enabled=n.enabled,
            draining=n.draining,
            weight=node_weight(
                n.gpu_type, gpu_count=n.gpu_count, table=settings.CLAWDBOT_GPU_SCORES
            ),
        )
        for n in Node.objects.all()
    }
    profiles = {
        p.model_id: ProfileView(
            id=p.pk,
            model_id=p.model_id,
            upstream_model=p.upstream_model,
            display_name=p.display_name or p.model_id,
            context_window=p.context_window,
            max_output_tokens=p.max_output_tokens,
            keep_alive=p.keep_alive,
            fallback=p.fallback.model_id if p.fallback else None,
            min_vram_gb=p.min_vram_gb,
            created=int(p.created_at.timestamp()),
            degraded_answer=p.degraded_answer,
            degraded_mode=p.degraded_mode,
        )
        for p in ModelProfile.objects.filter(enabled=True).select_related("fallback")
    }
    routes: dict[str, list[Route]] = {}
    for d in Deployment.objects.select_related("node", "profile"):
        node = nodes.get(d.node.name)
        profile = profiles.get(d.profile.model_id)
        if node is None or profile is None or not fits(node, profile):
            continue
        routes.setdefault(profile.model_id, []).append(
            Route(node=node, weight=d.weight_override or node.weight, override=d.weight_override)
        )
    now = timezone.now()
    keys = {}
    for k in ApiKey.objects.filter(revoked_at__isnull=True).prefetch_related("allowed_profiles"):
        if k.expires_at is not None and k.expires_at <= now:
            continue
        allowed = frozenset(p.model_id for p in k.allowed_profiles.all())
        keys[k.prefix] = KeyView(
            id=k.pk,
            prefix=k.prefix,
            digest=k.digest,
            allowed=allowed or None,
            rpm_limit=k.rpm_limit,
            tpm_limit=k.tpm_limit,
            expires_at=k.expires_at.timestamp() if k.expires_at else None,
            staff=k.is_staff_key,
        )
    return Snapshot(
        version=version,
        built_at=time.time(),
        nodes=nodes,
        profiles=profiles,
        routes={m: tuple(r) for m, r in routes.items()},
        keys=keys,
    )
