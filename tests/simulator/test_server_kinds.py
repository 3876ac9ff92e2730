"""The OpenAI-compatible servers the simulator imitates (--server-kind): each has the routes
of its real counterpart and no others, and says its context window where they say it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest

from tests.simulators import SimProcess

ROUTES = ("/health", "/props", "/get_model_info", "/get_server_info", "/info", "/metrics")
HAS = {
    "vllm": {"/health", "/metrics"},
    "sglang": {"/health", "/get_model_info", "/get_server_info", "/metrics"},
    "llamacpp": {"/health", "/props", "/metrics"},
    "tgi": {"/health", "/info", "/metrics"},
    "openai": set(),
}


@pytest.mark.parametrize("kind", sorted(HAS))
def test_each_kind_serves_its_own_routes(simulator: Callable[..., SimProcess], kind: str) -> None:
    sim = simulator(
        "--api", "openai", "--server-kind", kind, "--model", "org/m", "--context-length", "3000"
    )
    with httpx.Client(base_url=sim.url, timeout=10) as client:
        served = {path for path in ROUTES if client.get(path).status_code == 200}
        assert served == HAS[kind]
        [model] = client.get("/v1/models").json()["data"]
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "org/m", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"]
        windows = {
            "vllm": model.get("max_model_len"),
            "sglang": model.get("max_model_len"),
            "llamacpp": client.get("/props").json()["default_generation_settings"]["n_ctx"]
            if kind == "llamacpp"
            else None,
            "tgi": client.get("/info").json()["max_total_tokens"] if kind == "tgi" else None,
            "openai": model.get("max_model_len"),
        }
    assert windows[kind] == (None if kind == "openai" else 3000)
    assert model["id"] == "org/m"


def test_an_unknown_kind_is_refused_at_start() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "simulator", "--api", "openai", "--server-kind", "lmstudio"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "--server-kind: invalid choice: 'lmstudio'" in done.stderr
