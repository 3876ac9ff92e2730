"""The routing snapshot's ORM read costs the same handful of queries however big the config:
no query per node, profile, deployment or key (an N+1 here runs every 30 s per process)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.selectors import build_snapshot
from gateway.services import apikey_create
from nodes.models import Deployment, ModelProfile, Node

QUERIES = 4  # nodes, profiles with their fallbacks, deployments, keys (+1 for their models)


def grow(
    make_node: Callable[..., Node],
    make_profile: Callable[..., ModelProfile],
    deploy: Callable[[Node, ModelProfile], Deployment],
    size: int,
    start: int = 0,
) -> None:
    for i in range(start, start + size):
        node = make_node(f"gpu{i}")
        fallback = make_profile(f"small-{i}", upstream_model="qwen2:7b")
        profile = make_profile(f"big-{i}", fallback=fallback)
        deploy(node, profile)
        deploy(node, fallback)
        apikey_create(name=f"key {i}", models=[profile.model_id, fallback.model_id])


def test_the_query_count_does_not_grow_with_the_config(
    make_node: Any, make_profile: Any, deploy: Any, django_assert_num_queries: Any
) -> None:
    grow(make_node, make_profile, deploy, 2)
    with django_assert_num_queries(QUERIES + 1):
        small = build_snapshot(1)
    grow(make_node, make_profile, deploy, 6, start=2)
    with django_assert_num_queries(QUERIES + 1):
        big = build_snapshot(2)
    assert (len(small.nodes), len(small.keys), len(small.routes)) == (2, 2, 4)
    assert (len(big.nodes), len(big.keys), len(big.routes)) == (8, 8, 16)
    assert big.profiles["big-7"].fallback == "small-7"
    assert frozenset({"big-0", "small-0"}) in {key.allowed for key in big.keys.values()}
