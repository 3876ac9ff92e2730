"""The routing snapshot's frozen views, built for tests that need no database."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.snapshot import KeyView, NodeView, ProfileView

PROFILE = ProfileView(
    id=1,
    model_id="qwen3-32b",
    upstream_model="qwen3:32b",
    display_name="Qwen3 32B",
    context_window=8192,
    max_output_tokens=1024,
    keep_alive="5m",
    fallback=None,
    min_vram_gb=0.0,
    created=0,
)
KEY = KeyView(
    id=1, prefix="abc", digest="", allowed=None, rpm_limit=60, tpm_limit=1000,
    expires_at=None, staff=False,
)  # fmt: skip


def profile(**fields: Any) -> ProfileView:
    return replace(PROFILE, **fields)


def node(api_kind: str = "ollama", **fields: Any) -> NodeView:
    view = NodeView(
        id=1, name="n", base_url="http://127.0.0.1:9", api_kind=api_kind, gpu_type="A100",
        gpu_count=1, total_vram_gb=80.0, max_concurrent=4, queue_size=0, state="READY",
        enabled=True, draining=False, weight=1.0,
    )  # fmt: skip
    return replace(view, **fields)
