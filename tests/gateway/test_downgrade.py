"""Tier 2's downgrade as `endpoints.prepare` applies it, and what a finished request says about
the cluster's error rate: pure, no database or node."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from gateway import node_faults
from gateway.endpoints import prepare
from gateway.exchange import Exchange
from gateway.snapshot import Route, Snapshot
from gateway.upstreams.adapters import GenerationCall
from tests.gateway import views
from tests.gateway.views import node, profile

BIG = profile(id=1, model_id="big", upstream_model="qwen3:32b", fallback="small")
SMALL = profile(
    id=2, model_id="small", upstream_model="qwen2:7b", context_window=2048, max_output_tokens=2048
)
KEY = replace(views.KEY, rpm_limit=None, tpm_limit=None)


def snapshot(*, small_routable: bool = True) -> Snapshot:
    routes: dict[str, tuple[Route, ...]] = {"big": (Route(node(name="a"), 1.0),)}
    if small_routable:
        routes["small"] = (Route(node(name="b"), 1.0),)
    return Snapshot(version=1, built_at=0, profiles={"big": BIG, "small": SMALL}, routes=routes)


def chat(body: dict[str, Any], snap: Snapshot, *, downgrade: bool) -> tuple[Exchange, Any]:
    ex = Exchange("chat", key=KEY)
    call = prepare("chat", {"model": "big", **body}, snap, ex, downgrade=downgrade)
    return ex, call


HELLO = {"messages": [{"role": "user", "content": "hi"}]}


def test_in_tier_2_a_profile_with_a_fallback_is_served_by_the_fallback() -> None:
    ex, call = chat(HELLO, snapshot(), downgrade=True)
    assert isinstance(call, GenerationCall)
    assert (ex.model, ex.served_model, ex.downgraded_from) == ("big", "small", "big")
    assert call.profile is SMALL and call.request.model == "small"
    sent = orjson.loads(call.for_node(node(name="b")).body)
    assert sent["model"] == "qwen2:7b" and sent["options"]["num_ctx"] == 2048
    headers = dict(ex.base_headers())
    assert headers[b"x-model-downgraded"] == b"small"


def test_below_tier_2_nothing_is_downgraded() -> None:
    ex, call = chat(HELLO, snapshot(), downgrade=False)
    assert (ex.served_model, ex.downgraded_from, call.profile) == ("big", "", BIG)
    assert b"x-model-downgraded" not in dict(ex.base_headers())


@pytest.mark.parametrize(
    ("body", "snap"),
    [
        (HELLO, snapshot(small_routable=False)),  # no node can serve the fallback
        # Fits the profile's window (its max_tokens clamped to 1024), not the fallback's.
        ({"messages": [{"role": "user", "content": "hi " * 100}], "max_tokens": 2000}, snapshot()),
    ],
)
def test_a_fallback_that_cannot_take_the_request_leaves_it_as_asked(
    body: dict[str, Any], snap: Snapshot
) -> None:
    ex, call = chat(body, snap, downgrade=True)
    assert (ex.served_model, ex.downgraded_from, call.profile) == ("big", "", BIG)


def test_embeddings_are_never_downgraded() -> None:
    ex = Exchange("embeddings", key=KEY)
    prepare("embeddings", {"model": "big", "input": "hi"}, snapshot(), ex, downgrade=True)
    assert (ex.served_model, ex.downgraded_from) == ("big", "")


def test_what_a_finished_request_says_about_the_cluster() -> None:
    assert node_faults.cluster_failed("neutral", cluster_failed=True) is True  # all failed
    assert node_faults.cluster_failed("fail", cluster_failed=False) is True  # cut short
    assert node_faults.cluster_failed("ok", cluster_failed=False) is False  # answered
    # Refused before routing (a bad body or key, the key's rate limit) or the client left.
    assert node_faults.cluster_failed("neutral", cluster_failed=False) is None
