"""`clawdbot onboard` and the probes against simulator processes imitating each server kind
(`--server-kind`): the kind detected, the context window read from the server's own answer,
the refusal where the server does not say it, and no node marked down for a route it lacks."""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from nodes.models import ModelProfile, Node
from nodes.probe_runner import probe_and_record
from tests.simulators import SimProcess

pytestmark = pytest.mark.django_db


def onboard(*args: str) -> str:
    out = StringIO()
    call_command("onboard", *args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("kind", "label", "evidence"),
    [
        ("vllm", "vLLM", "owned_by vllm"),
        ("sglang", "SGLang", "/get_model_info"),
        ("llamacpp", "llama.cpp", "/props"),
        ("tgi", "Text Generation Inference", "/info"),
    ],
)
def test_onboard_detects_the_kind_and_reads_its_window(
    simulator: Callable[..., SimProcess], kind: str, label: str, evidence: str
) -> None:
    sim = simulator(
        "--api", "openai", "--server-kind", kind, "--model", "org/tiny", "--context-length", "6144"
    )
    out = onboard("--name", "n1", "--url", sim.url, "--gpu-type", "A10")
    assert f"detected a {label} server" in out and evidence in out
    assert "org/tiny (context 6144)" in out
    assert "node n1 is READY" in out
    node = Node.objects.get()
    assert (node.api_kind, node.server_kind) == ("openai", kind)
    assert ModelProfile.objects.get().context_window == 6144


def test_a_generic_server_needs_context_window_and_is_ready_without_health(
    simulator: Callable[..., SimProcess],
) -> None:
    sim = simulator("--api", "openai", "--server-kind", "openai", "--model", "tiny.gguf")
    with pytest.raises(CommandError, match=r"does not say the context window of tiny.gguf; give"):
        onboard("--name", "py", "--url", sim.url, "--gpu-type", "A10")
    assert not ModelProfile.objects.exists()
    out = onboard("--name", "py", "--url", sim.url, "--gpu-type", "A10", "--context-window", "2048")
    assert "detected a Other OpenAI-compatible server" in out
    assert "node py is READY" in out
    assert ModelProfile.objects.get().context_window == 2048
    # It was asked for /health, answered 404, and that counted for nothing.
    assert any(r["path"] == "/health" for r in sim.requests())


def test_the_periodic_probe_keeps_a_health_less_server_ready(
    simulator: Callable[..., SimProcess], redis_client: object
) -> None:
    sim = simulator("--api", "openai", "--server-kind", "openai", "--model", "tiny.gguf")
    onboard("--name", "py", "--url", sim.url, "--gpu-type", "A10", "--context-window", "2048")
    node = Node.objects.prefetch_related("deployments__profile").get()
    for _ in range(4):
        [(_, result)] = probe_and_record([node], then=lambda outcome: None)
        assert result.ok, result.error
    node.refresh_from_db()
    assert (node.state, node.consecutive_failures) == ("READY", 0)
    # A model the server stops listing is a failed probe: the model list is the health check.
    ModelProfile.objects.update(upstream_model="gone.gguf")
    node = Node.objects.prefetch_related("deployments__profile").get()
    [(_, result)] = probe_and_record([node], then=lambda outcome: None)
    assert not result.ok and "not served by the node: gone.gguf" in result.error


def test_a_given_kind_is_not_detected_and_must_fit_the_api(
    simulator: Callable[..., SimProcess],
) -> None:
    sim = simulator("--api", "openai", "--server-kind", "llamacpp", "--model", "m.gguf")
    out = onboard(
        "--name", "l1", "--url", sim.url, "--server-kind", "llamacpp", "--gpu-type", "A10",
        "--context-window", "1024",
    )  # fmt: skip
    assert "server kind: llama.cpp (as given)" in out and "detected" not in out
    # The operator's window, within the one the server serves (32768).
    assert ModelProfile.objects.get().context_window == 1024
    with pytest.raises(CommandError, match="speaks the openai API, not ollama"):
        onboard("--name", "l2", "--url", sim.url, "--api", "ollama", "--server-kind", "vllm",
                "--gpu-type", "A10")  # fmt: skip


def test_a_declared_vllm_without_health_is_refused(simulator: Callable[..., SimProcess]) -> None:
    # /health is part of every vLLM: its absence means the URL is not a vLLM.
    sim = simulator("--api", "openai", "--server-kind", "openai", "--model", "m")
    with pytest.raises(CommandError) as refused:
        onboard("--name", "v", "--url", sim.url, "--server-kind", "vllm", "--gpu-type", "A10",
                "--context-window", "1024")  # fmt: skip
    message = str(refused.value)
    assert "GET /health answered HTTP 404" in message
    assert "it answers as a Other OpenAI-compatible server" in message
    assert "register it with --server-kind openai" in message


def test_nothing_to_detect_at_an_unreachable_url_says_so() -> None:
    with pytest.raises(CommandError, match=r"not usable: cannot connect to http://127.0.0.1:9"):
        onboard("--name", "gone", "--url", "http://127.0.0.1:9", "--gpu-type", "A10")
    assert not Node.objects.exists()
