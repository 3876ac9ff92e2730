"""Server kinds in config files: a kind alone brings its API, a file written before server
kinds (api_kind only) still applies and changes nothing, a pair that disagrees is named by
its path."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from nodes.models import Node

pytestmark = pytest.mark.django_db


def apply(tmp_path: Path, text: str) -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    err = io.StringIO()
    call_command("config", "apply", str(path), stdout=io.StringIO(), stderr=err)
    return err.getvalue()


def node_file(**fields: str) -> str:
    lines = "".join(f"    {k}: {v}\n" for k, v in fields.items())
    return f"version: 1\nnodes:\n  - name: n1\n    base_url: http://127.0.0.1:9\n{lines}"


def test_a_kind_alone_brings_its_api_and_export_names_both(tmp_path: Path) -> None:
    apply(tmp_path, node_file(server_kind="llamacpp", gpu_type="A10"))
    node = Node.objects.get()
    assert (node.api_kind, node.server_kind) == ("openai", "llamacpp")
    out = io.StringIO()
    call_command("config", "export", stdout=out)
    assert "  api_kind: openai\n  server_kind: llamacpp\n" in out.getvalue()
    assert "no changes" in apply(tmp_path, out.getvalue())


def test_a_file_from_before_server_kinds_applies_and_then_changes_nothing(
    tmp_path: Path,
) -> None:
    old = node_file(api_kind="openai", gpu_type="A10")
    apply(tmp_path, old)
    assert Node.objects.get().server_kind == "openai"
    assert "no changes" in apply(tmp_path, old)
    # The kind said later is a change of that one field.
    assert "server_kind" in apply(tmp_path, node_file(server_kind="vllm", gpu_type="A10"))
    assert Node.objects.get().server_kind == "vllm"


def test_a_pair_that_disagrees_is_named_by_its_path(tmp_path: Path) -> None:
    with pytest.raises(CommandError) as refused:
        apply(tmp_path, node_file(api_kind="ollama", server_kind="tgi", gpu_type="A10"))
    assert "nodes[0].server_kind: a Text Generation Inference server speaks the openai API" in (
        str(refused.value)
    )
    with pytest.raises(CommandError, match=r"nodes\[0\].api_kind: give the API"):
        apply(tmp_path, node_file(gpu_type="A10"))
    assert not Node.objects.exists()
