"""/api/nodes and the server kind: given alone it brings its API, a pair that disagrees is a
400 in the OpenAI shape, and the node detail carries the load the server reports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis
from django.test import Client

from gateway.services import apikey_create
from nodes import server_load_store
from nodes.models import Node
from nodes.server_load import ServerLoad

JSON = "application/json"
NODE = {"name": "sg1", "base_url": "http://10.0.0.3:30000", "gpu_type": "H100"}


@pytest.fixture
def staff(db: None) -> str:
    return apikey_create(name="ops", staff=True).secret


def call(client: Client, method: str, path: str, key: str, body: Any = None) -> Any:
    data = orjson.dumps(body) if body is not None else b""
    return getattr(client, method.lower())(
        path, data=data, content_type=JSON, HTTP_AUTHORIZATION=f"Bearer {key}"
    )


def test_a_server_kind_alone_brings_its_api(client: Client, staff: str) -> None:
    created = call(client, "POST", "/api/nodes", staff, {**NODE, "server_kind": "sglang"})
    assert created.status_code == 201, created.content
    assert (created.json()["api_kind"], created.json()["server_kind"]) == ("openai", "sglang")
    node = Node.objects.get(name="sg1")
    assert (node.api_kind, node.server_kind) == ("openai", "sglang")
    # Changing the kind alone keeps the pair consistent.
    patched = call(client, "PATCH", "/api/nodes/sg1", staff, {"server_kind": "ollama"})
    assert patched.status_code == 200, patched.content
    assert (patched.json()["api_kind"], patched.json()["server_kind"]) == ("ollama", "ollama")


def test_a_pair_that_disagrees_or_an_unknown_kind_is_refused(client: Client, staff: str) -> None:
    wrong = call(
        client, "POST", "/api/nodes", staff, {**NODE, "api_kind": "ollama", "server_kind": "vllm"}
    )
    assert wrong.status_code == 400
    error = wrong.json()["error"]
    assert error["param"] == "server_kind"
    assert "speaks the openai API, not ollama" in error["message"]
    unknown = call(client, "POST", "/api/nodes", staff, {**NODE, "server_kind": "lmstudio"})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "server_kind"
    neither = call(client, "POST", "/api/nodes", staff, NODE)
    assert neither.status_code == 400 and "give the API" in neither.json()["error"]["message"]
    assert not Node.objects.exists()


def test_a_node_stored_without_a_kind_shows_its_apis_plain_one(
    client: Client, staff: str, make_node: Callable[..., Node]
) -> None:
    make_node("old", api_kind="openai")
    [listed] = call(client, "GET", "/api/nodes", staff).json()["results"]
    assert (listed["api_kind"], listed["server_kind"]) == ("openai", "openai")
    assert "server_load" not in listed  # the list reads no Redis per node


def test_the_node_detail_has_the_servers_load(
    client: Client, staff: str, make_node: Callable[..., Node], redis_client: redis.Redis
) -> None:
    make_node("v1", api_kind="openai", server_kind="vllm")
    assert call(client, "GET", "/api/nodes/v1", staff).json()["server_load"] is None
    server_load_store.publish("v1", ServerLoad(running=2, waiting=5, kv=0.42), at_ms=1_700)
    server_load_store.mark_stale("v1")
    detail = call(client, "GET", "/api/nodes/v1", staff).json()
    assert detail["server_load"] == {
        "running": 2,
        "waiting": 5,
        "kv": 0.42,
        "at": 1_700,
        "stale": True,
    }
