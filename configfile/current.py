"""The configuration in the database, as a config document (what `clawdbot config export`
writes): everything an operator sets, nothing the control plane measures (state, probes,
load times), and of API keys their metadata only: a key's secret is never stored, only its
keyed hash, and that is not exported either."""

from __future__ import annotations

from typing import Any

from configfile.document import VERSION
from gateway.models import ApiKey
from nodes.models import Deployment, ModelProfile, Node


def document() -> dict[str, Any]:
    """A fixed number of queries, whatever the size of the cluster."""
    deployments: dict[int, list[dict[str, Any]]] = {}
    for d in Deployment.objects.select_related("profile").order_by("profile__model_id"):
        deployments.setdefault(d.node_id, []).append(
            {"profile": d.profile.model_id, "weight_override": d.weight_override}
        )
    nodes = []
    for node in Node.objects.order_by("name"):
        entry = node.to_dict()
        del entry["state"]  # measured, not configured
        entry["deployments"] = deployments.get(node.pk, [])
        nodes.append(entry)
    keys = []
    live = ApiKey.objects.filter(revoked_at__isnull=True).select_related("owner")
    for key in live.prefetch_related("allowed_profiles").order_by("created_at", "pk"):
        entry = key.to_dict()
        keys.append(
            {
                "name": entry["name"],
                "prefix": "ck-" + entry["prefix"],
                "owner": entry["owner"],
                "models": entry["models"],
                "rpm_limit": entry["rpm_limit"],
                "tpm_limit": entry["tpm_limit"],
                "staff": entry["staff"],
                "expires_at": entry["expires_at"],
            }
        )
    return {
        "version": VERSION,
        "profiles": [
            p.to_dict()
            for p in ModelProfile.objects.select_related("fallback").order_by("model_id")
        ],
        "nodes": nodes,
        "keys": keys,
    }
