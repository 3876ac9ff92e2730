"""Building a small routed world for data-plane tests: simulator nodes registered as READY
nodes with one profile deployed, and an API key; then wait for the gateway to see it."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.services import apikey_create
from nodes.models import Deployment, ModelProfile, Node
from tests.gateways import GatewayProcess
from tests.simulators import SimProcess

HELLO = [{"role": "user", "content": "Hello there"}]


@dataclass
class World:
    gateway: GatewayProcess
    key: str
    profile: ModelProfile
    nodes: dict[str, Node]

    @property
    def base_url(self) -> str:
        return self.gateway.url + "/v1"

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {key or self.key}"}

    def stream_chat(self, **body: Any) -> AbstractContextManager[httpx.Response]:
        """A streamed chat completion with the world's key: hello to its profile, unless
        `body` says otherwise."""
        return httpx.stream(
            "POST",
            self.base_url + "/chat/completions",
            headers=self.headers(),
            json={"model": "qwen3-32b", "messages": HELLO, "stream": True, **body},
            timeout=20,
        )


def add_node(
    profile: ModelProfile, name: str, sim: SimProcess, api: str = "ollama", **fields: Any
) -> Node:
    node = Node.objects.create(
        name=name,
        base_url=sim.url,
        api_kind=api,
        gpu_type=fields.pop("gpu_type", "A100"),
        state="READY",
        **fields,
    )
    Deployment.objects.create(node=node, profile=profile)
    return node


def build(
    gateway: GatewayProcess,
    sims: dict[str, SimProcess],
    *,
    api: str = "ollama",
    profile_fields: dict[str, Any] | None = None,
    key_fields: dict[str, Any] | None = None,
    node_fields: dict[str, dict[str, Any]] | None = None,
) -> World:
    profile = ModelProfile.objects.create(
        model_id="qwen3-32b",
        upstream_model="qwen3:32b",
        context_window=(profile_fields or {}).pop("context_window", 8192),
        max_output_tokens=(profile_fields or {}).pop("max_output_tokens", 1024),
        **(profile_fields or {}),
    )
    nodes = {
        name: add_node(profile, name, sim, api, **(node_fields or {}).get(name, {}))
        for name, sim in sims.items()
    }
    key = apikey_create(name="world", **(key_fields or {})).secret
    gateway.wait_for_config()
    return World(gateway=gateway, key=key, profile=profile, nodes=nodes)
