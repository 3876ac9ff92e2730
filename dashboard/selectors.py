"""Reads for the dashboard pages, each a fixed number of queries."""

from __future__ import annotations

from dataclasses import dataclass

from nodes.models import ModelProfile, Node


@dataclass(frozen=True)
class Overview:
    nodes: list[Node]
    profiles: list[ModelProfile]


def cluster_overview() -> Overview:
    return Overview(
        nodes=list(Node.objects.prefetch_related("deployments__profile")),
        profiles=list(ModelProfile.objects.prefetch_related("deployments__node")),
    )
