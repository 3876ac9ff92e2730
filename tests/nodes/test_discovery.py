from __future__ import annotations

import pytest

from nodes.discovery import (
    DiscoveredModel,
    UnexpectedAnswer,
    ollama_context_length,
    ollama_tag_names,
    openai_models,
    same_model,
)
from nodes.keepalive import keep_alive_wire_value, parse_keep_alive


def test_tag_names_and_shape_errors() -> None:
    body = {"models": [{"name": "qwen3:32b", "model": "qwen3:32b"}, {"model": "llama3:8b"}]}
    assert ollama_tag_names(body) == ["qwen3:32b", "llama3:8b"]
    with pytest.raises(UnexpectedAnswer):
        ollama_tag_names({"detail": "Not Found"})


def test_context_length_reads_the_architecture_key() -> None:
    show = {"model_info": {"general.architecture": "qwen3", "qwen3.context_length": 40960}}
    assert ollama_context_length(show) == 40960
    assert ollama_context_length({"model_info": {"llama.context_length": 8192}}) == 8192
    assert ollama_context_length({"model_info": {}}) is None
    assert ollama_context_length("nope") is None


def test_openai_models_read_max_model_len() -> None:
    body = {
        "data": [
            {"id": "Qwen/Qwen3-32B", "max_model_len": 32768},
            {"id": "lora-adapter", "parent": "Qwen/Qwen3-32B"},
        ]
    }
    assert openai_models(body) == [
        DiscoveredModel("Qwen/Qwen3-32B", 32768),
        DiscoveredModel("lora-adapter", None),
    ]


def test_same_model_defaults_the_tag_to_latest() -> None:
    assert same_model("llama3", "llama3:latest")
    assert not same_model("llama3", "llama3:8b")


def test_keep_alive_parsing() -> None:
    assert parse_keep_alive("5m") == 300
    assert parse_keep_alive("90") == 90
    assert parse_keep_alive("1h") == 3600
    assert parse_keep_alive("-1") is None
    assert parse_keep_alive("0") == 0
    with pytest.raises(ValueError, match="not a keep-alive duration"):
        parse_keep_alive("forever")
    assert keep_alive_wire_value("300") == 300
    assert keep_alive_wire_value("5m") == "5m"
