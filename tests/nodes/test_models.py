from __future__ import annotations

from collections.abc import Callable

import pytest
from django.core.exceptions import ValidationError

from nodes.models import Deployment, ModelProfile, Node

pytestmark = pytest.mark.django_db


def errors_of(obj: object) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as info:
        obj.full_clean()  # type: ignore[attr-defined]
    return info.value.message_dict


@pytest.mark.parametrize(
    "url",
    ["gpu1:11434", "ftp://gpu1:11434", "http://", "http://gpu1:11434/?x=1", "not a url"],
)
def test_node_rejects_bad_base_urls(url: str) -> None:
    node = Node(name="gpu1", base_url=url, api_kind="ollama", gpu_type="A100")
    assert "base_url" in errors_of(node)


def test_node_accepts_host_port_urls() -> None:
    for url in ("http://127.0.0.1:11434", "https://gpu-1.internal:8000", "http://gpu1:11434/"):
        Node(name="gpu1", base_url=url, api_kind="ollama", gpu_type="A100").full_clean()


@pytest.mark.parametrize("name", ["GPU1", "-gpu", "gpu 1", "", "g" * 64])
def test_node_name_must_be_a_queue_safe_slug(name: str) -> None:
    node = Node(name=name, base_url="http://gpu1:1", api_kind="ollama", gpu_type="A100")
    assert "name" in errors_of(node)


def test_node_rejects_unknown_api_kind_gpu_type_and_zero_concurrency() -> None:
    node = Node(
        name="gpu1", base_url="http://gpu1:1", api_kind="grpc", gpu_type="TPU", max_concurrent=0
    )
    errors = errors_of(node)
    assert {"api_kind", "gpu_type", "max_concurrent"} <= set(errors)


def test_node_labels_must_be_an_object() -> None:
    node = Node(
        name="gpu1", base_url="http://gpu1:1", api_kind="ollama", gpu_type="A100", labels=[1]
    )
    assert "labels" in errors_of(node)


def test_profile_context_window_must_be_positive(make_profile: Callable[..., ModelProfile]) -> None:
    profile = ModelProfile(model_id="m", upstream_model="m", context_window=0, max_output_tokens=1)
    errors = errors_of(profile)
    assert "context_window" in errors


def test_profile_max_output_cannot_exceed_window() -> None:
    profile = ModelProfile(
        model_id="m", upstream_model="m", context_window=4096, max_output_tokens=8192
    )
    errors = errors_of(profile)
    assert errors["max_output_tokens"] == [
        "Max output tokens (8192) cannot exceed the context window (4096)."
    ]


def test_profile_keep_alive_is_validated() -> None:
    profile = ModelProfile(
        model_id="m", upstream_model="m", context_window=10, max_output_tokens=5, keep_alive="soon"
    )
    assert "keep_alive" in errors_of(profile)
    for ok in ("5m", "300", "-1", "0", "1h", "30s"):
        profile.keep_alive = ok
        profile.full_clean()


def test_profile_fallback_to_itself_is_a_loop(make_profile: Callable[..., ModelProfile]) -> None:
    profile = make_profile("big")
    profile.fallback = profile
    assert errors_of(profile)["fallback"] == ["This fallback makes a loop: big → big."]


def test_profile_fallback_cycle_is_named(make_profile: Callable[..., ModelProfile]) -> None:
    a = make_profile("a")
    b = make_profile("b", fallback=a)
    c = make_profile("c", fallback=b)
    a.fallback = c
    assert errors_of(a)["fallback"] == ["This fallback makes a loop: a → c → b → a."]


def test_profile_fallback_chain_without_loop_is_fine(
    make_profile: Callable[..., ModelProfile],
) -> None:
    small = make_profile("small")
    medium = make_profile("medium", fallback=small)
    make_profile("large", fallback=medium).full_clean()


def test_deployment_refuses_node_without_enough_vram(
    make_node: Callable[..., Node], make_profile: Callable[..., ModelProfile]
) -> None:
    node = make_node(vram_gb_per_gpu=24, gpu_count=1, gpu_type="RTX4090")
    profile = make_profile(min_vram_gb=64)
    deployment = Deployment(node=node, profile=profile)
    assert errors_of(deployment)["__all__"] == [
        "qwen3-32b needs 64 GB of GPU memory; gpu1 has 24 GB (1 × 24 GB)."
    ]


def test_deployment_counts_every_gpu_of_the_node(
    make_node: Callable[..., Node], make_profile: Callable[..., ModelProfile]
) -> None:
    node = make_node(vram_gb_per_gpu=24, gpu_count=4)
    Deployment(node=node, profile=make_profile(min_vram_gb=64)).full_clean()


def test_deployment_is_unique_per_node_and_profile(
    make_node: Callable[..., Node], make_profile: Callable[..., ModelProfile]
) -> None:
    node, profile = make_node(), make_profile()
    Deployment.objects.create(node=node, profile=profile)
    assert "__all__" in errors_of(Deployment(node=node, profile=profile))
