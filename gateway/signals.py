"""Routing snapshots must follow every config change, including the admin's plain saves,
so saving or deleting a node, profile, deployment or key (or changing a key's models) bumps
the routing version after the commit. Bulk updates (`QuerySet.update`) send no signal: the
services that make them bump it themselves (`nodes_set_draining`, `apikeys_revoke`). The
receivers live here, not in `nodes`, because one of the models is the gateway's ApiKey and
the control plane never imports the data plane."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import m2m_changed, post_delete, post_save

from gateway.models import ApiKey
from nodes.models import Deployment, ModelProfile, Node
from nodes.routing_version import bump_after_commit

# Saves that touch only these fields change nothing the data plane routes on.
BOOKKEEPING = frozenset(
    {
        "consecutive_failures",
        "consecutive_successes",
        "last_probe_at",
        "last_probe_error",
        "loaded",
        "loaded_at",
        "last_load_ms",
        "last_load_error",
        "last_used_at",
    }
)


def _changed(update_fields: frozenset[str] | None = None, **kwargs: Any) -> None:
    if update_fields and set(update_fields) <= BOOKKEEPING:
        return
    bump_after_commit()


def connect() -> None:
    for model in (Node, ModelProfile, Deployment, ApiKey):
        post_save.connect(_changed, sender=model, dispatch_uid=f"routing-save-{model.__name__}")
        post_delete.connect(_changed, sender=model, dispatch_uid=f"routing-del-{model.__name__}")
    m2m_changed.connect(
        _changed, sender=ApiKey.allowed_profiles.through, dispatch_uid="routing-key-models"
    )
