"""The server-reported load as the admin shows it: the node list's column and its page."""

from __future__ import annotations

from collections.abc import Callable

import redis
from django.test import Client
from django.urls import reverse

from nodes import server_load_store
from nodes.live import describe_server_load
from nodes.models import Node
from nodes.server_load import ServerLoad


def test_describe_says_what_is_known_and_how_old_stale_values_are() -> None:
    load = {"running": 3, "waiting": 7, "kv": 0.7, "at": 10_000, "stale": False}
    assert describe_server_load(load, now_ms=11_000) == "3 running, 7 waiting, KV cache 70%"
    stale = {**load, "kv": None, "stale": True}
    assert describe_server_load(stale, now_ms=16_000) == "3 running, 7 waiting (stale: 6 s old)"
    assert describe_server_load(None, now_ms=0) == "not reported"


def test_the_admin_shows_the_kind_and_the_servers_load(
    admin_client: Client, make_node: Callable[..., Node], redis_client: redis.Redis
) -> None:
    node = make_node("v1", api_kind="openai", server_kind="vllm")
    make_node("o1")
    server_load_store.publish("v1", ServerLoad(running=2, waiting=4, kv=0.5), at_ms=1)
    listing = admin_client.get(reverse("admin:nodes_node_changelist")).content.decode()
    assert "2 running, 4 waiting, KV cache 50%" in listing
    assert "not reported" in listing  # the Ollama node: no gauges
    assert "vLLM" in listing
    page = admin_client.get(reverse("admin:nodes_node_change", args=[node.pk])).content.decode()
    assert "2 running, 4 waiting, KV cache 50%" in page
    assert 'name="server_kind"' in page
