"""Real inference servers (llama.cpp's python server, vLLM on the CPU) behind a real gateway.

The servers come from `make real-servers` (tests/realservers/install.py); each is started once
per module that uses it and stopped after it. A server that is not installed skips its tests
and says how to install it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.gateways import GatewayProcess
from tests.realservers.install import LLAMACPP, VLLM
from tests.realservers.servers import RealServer, start_llamacpp, start_vllm, unavailable

# llama-cpp-python's --n_ctx and vLLM's --max-model-len: what onboarding must find (or be
# told, for llama-cpp-python, which says it nowhere). llama.cpp decodes the tiny model at
# about a thousand tokens a second: its window leaves room for an answer long enough to
# leave in the middle of.
CONTEXT_WINDOWS = {"llamacpp": 8192, "vllm": 1024}


@pytest.fixture(scope="module", params=["llamacpp", "vllm"])
def real(request: pytest.FixtureRequest) -> Iterator[RealServer]:
    """Each real server in turn: every test that uses it runs against both."""
    server_spec = LLAMACPP if request.param == "llamacpp" else VLLM
    reason = unavailable(server_spec)
    if reason:
        pytest.skip(reason)
    start = start_llamacpp if request.param == "llamacpp" else start_vllm
    server = start(CONTEXT_WINDOWS[request.param])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def real_gateway(django_db_setup: None, django_db_blocker: Any) -> Iterator[GatewayProcess]:
    """A gateway for CPU-speed nodes. Its keep-alive comes after 5 s, not the suite's 0.3 s:
    a node's refusal (a 400) must reach the client as the HTTP status, which a keep-alive sent
    first would have fixed at 200."""
    gateway = GatewayProcess(
        env={"CLAWDBOT_KEEPALIVE_S": "5", "CLAWDBOT_READ_TIMEOUT_S": "60"},
    )
    yield gateway
    gateway.stop()
