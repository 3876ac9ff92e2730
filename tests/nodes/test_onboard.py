"""`clawdbot onboard` against real simulator processes."""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from nodes.models import Deployment, ModelProfile, Node
from tests.simulators import SimProcess

pytestmark = pytest.mark.django_db


def onboard(*args: str) -> str:
    out = StringIO()
    call_command("onboard", *args, stdout=out)
    return out.getvalue()


def test_onboard_ollama_node_discovers_models_and_is_ready(
    simulator: Callable[..., SimProcess],
) -> None:
    sim = simulator(
        "--api", "ollama", "--gpu-type", "H100", "--model", "qwen3:32b", "--context-length", "40960"
    )
    out = onboard(
        "--name", "gpu1", "--url", sim.url, "--api", "ollama", "--gpu-type", "H100",
        "--vram-gb", "80", "--max-concurrent", "6", "--label", "rack=b2",
    )  # fmt: skip
    assert "node gpu1 is READY" in out
    assert "qwen3:32b (context 40960)" in out
    node = Node.objects.get(name="gpu1")
    assert (node.state, node.gpu_type, node.max_concurrent, node.labels) == (
        "READY",
        "H100",
        6,
        {"rack": "b2"},
    )
    profile = ModelProfile.objects.get(upstream_model="qwen3:32b")
    # The trained length (40960) is capped at 32768 for new profiles: num_ctx costs VRAM.
    assert profile.context_window == 32768
    assert profile.max_output_tokens == 4096
    assert Deployment.objects.filter(node=node, profile=profile).exists()


def test_onboard_is_idempotent_and_keeps_an_existing_profile(
    simulator: Callable[..., SimProcess], make_profile: Callable[..., ModelProfile]
) -> None:
    sim = simulator("--api", "ollama", "--model", "qwen3:32b")
    make_profile("qwen-prod", upstream_model="qwen3:32b", context_window=16384)
    args = ["--name", "gpu1", "--url", sim.url, "--api", "ollama", "--gpu-type", "A100"]
    onboard(*args)
    second = onboard(*args)
    assert "updated node gpu1" in second and "using profile qwen-prod" in second
    assert ModelProfile.objects.count() == 1
    assert ModelProfile.objects.get().context_window == 16384
    assert Deployment.objects.count() == 1


def test_onboard_warms_prefetch_profiles_with_num_ctx_and_keep_alive(
    simulator: Callable[..., SimProcess],
) -> None:
    sim = simulator("--api", "ollama", "--model", "qwen3:32b")
    out = onboard(
        "--name", "gpu1", "--url", sim.url, "--api", "ollama", "--gpu-type", "A100",
        "--context-window", "8192", "--prefetch", "qwen3:32b",
    )  # fmt: skip
    assert "loaded qwen3:32b in" in out
    deployment = Deployment.objects.get()
    assert deployment.loaded and deployment.last_load_ms is not None
    preloads = [
        r["body"]
        for r in sim.requests()
        if r["path"] == "/api/chat" and r["body"].get("messages") == []
    ]
    assert preloads, "a preload (empty messages) was sent"
    assert preloads[-1]["options"]["num_ctx"] == 8192
    assert preloads[-1]["keep_alive"] == "5m"


def test_onboard_openai_kind_reads_max_model_len(simulator: Callable[..., SimProcess]) -> None:
    sim = simulator("--api", "openai", "--model", "Qwen/Qwen3-32B", "--context-length", "16384")
    out = onboard("--name", "vllm1", "--url", sim.url, "--api", "openai", "--gpu-type", "H200")
    assert "node vllm1 is READY" in out
    profile = ModelProfile.objects.get()
    assert (profile.model_id, profile.context_window) == ("Qwen/Qwen3-32B", 16384)


def test_onboard_unreachable_node_fails_and_says_why() -> None:
    with pytest.raises(CommandError, match=r"gpu1 is not usable: cannot connect to"):
        onboard("--name", "gpu1", "--url", "http://127.0.0.1:9", "--api", "ollama",
                "--gpu-type", "A10")  # fmt: skip
    node = Node.objects.get(name="gpu1")
    assert node.state == "DOWN" and "cannot connect" in node.last_probe_error


def test_onboard_wrong_api_kind_names_the_right_one(simulator: Callable[..., SimProcess]) -> None:
    vllm = simulator("--api", "openai", "--model", "m")
    with pytest.raises(CommandError, match="register it with --api openai"):
        onboard("--name", "n1", "--url", vllm.url, "--api", "ollama", "--gpu-type", "A10")
    ollama = simulator("--api", "ollama", "--model", "m")
    with pytest.raises(CommandError, match="register it with --api ollama"):
        onboard("--name", "n2", "--url", ollama.url, "--api", "openai", "--gpu-type", "A10")
    assert set(Node.objects.values_list("state", flat=True)) == {"DOWN"}


def test_onboard_only_named_models_and_unknown_model_error(
    simulator: Callable[..., SimProcess],
) -> None:
    sim = simulator("--api", "ollama", "--model", "qwen3:32b", "--model", "llama3:8b")
    onboard("--name", "g", "--url", sim.url, "--api", "ollama", "--gpu-type", "A10",
            "--models", "llama3:8b")  # fmt: skip
    assert list(ModelProfile.objects.values_list("model_id", flat=True)) == ["llama3:8b"]
    with pytest.raises(CommandError, match=r"does not serve mistral \(it serves"):
        onboard("--name", "g", "--url", sim.url, "--api", "ollama", "--gpu-type", "A10",
                "--models", "mistral")  # fmt: skip


def test_onboard_rejects_bad_url_with_a_clear_message() -> None:
    with pytest.raises(CommandError, match=r"base_url: Enter an http:// or https:// URL"):
        onboard("--name", "g", "--url", "gpu1:11434", "--api", "ollama", "--gpu-type", "A10")


def test_onboard_skips_a_model_the_node_cannot_hold(
    simulator: Callable[..., SimProcess], make_profile: Callable[..., ModelProfile]
) -> None:
    sim = simulator("--api", "ollama", "--model", "qwen3:32b")
    make_profile("qwen3-32b", upstream_model="qwen3:32b", min_vram_gb=64)
    out = StringIO()
    with pytest.raises(CommandError, match="serves no model Clawdbot can deploy"):
        call_command("onboard", "--name", "small", "--url", sim.url, "--api", "ollama",
                     "--gpu-type", "RTX4090", "--vram-gb", "24", stdout=out)  # fmt: skip
    assert "skipped qwen3:32b: qwen3-32b needs 64 GB" in out.getvalue()
    assert not Deployment.objects.exists()
