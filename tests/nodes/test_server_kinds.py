"""Telling inference servers apart, and reading their context windows: pure functions over the
answers each kind really gives (shapes taken from vLLM, SGLang, llama.cpp, TGI and Ollama)."""

from __future__ import annotations

import pytest

from nodes.discovery import (
    UnexpectedAnswer,
    llamacpp_context_length,
    openai_models,
    sglang_context_length,
    tgi_models,
)
from nodes.server_kinds import Answer, detect, kind_of, resolve, spec

VLLM_MODELS = {
    "object": "list",
    "data": [{"id": "Qwen/Qwen3-8B", "owned_by": "vllm", "max_model_len": 32768}],
}
GENERIC_MODELS = {"object": "list", "data": [{"id": "tiny.gguf", "owned_by": "me"}]}
NOT_FOUND = Answer(404, None)


def test_each_kind_is_told_by_its_own_route() -> None:
    ollama = detect({"/api/tags": Answer(200, {"models": []}), "/v1/models": NOT_FOUND})
    llamacpp = detect(
        {
            "/props": Answer(200, {"default_generation_settings": {"n_ctx": 4096}}),
            "/v1/models": Answer(200, {"data": [{"id": "m.gguf", "owned_by": "llamacpp"}]}),
        }
    )
    sglang = detect(
        {
            "/get_model_info": Answer(200, {"model_path": "Qwen/Qwen3-8B"}),
            "/v1/models": Answer(200, {"data": [{"id": "Qwen/Qwen3-8B", "owned_by": "sglang"}]}),
        }
    )
    tgi = detect({"/info": Answer(200, {"model_id": "m", "max_total_tokens": 4096})})
    vllm = detect({"/v1/models": Answer(200, VLLM_MODELS), "/props": NOT_FOUND})
    generic = detect({"/v1/models": Answer(200, GENERIC_MODELS), "/health": NOT_FOUND})
    found = [d.kind if d else None for d in (ollama, llamacpp, sglang, tgi, vllm, generic)]
    assert found == ["ollama", "llamacpp", "sglang", "tgi", "vllm", "openai"]
    assert vllm is not None and "owned_by vllm" in vllm.evidence


def test_a_server_answering_everything_with_200_is_not_taken_for_a_specific_kind() -> None:
    # A catch-all web app (an SPA, a proxy's page) answers every path; only real shapes count.
    page = Answer(200, None)
    anything = {"detail": "ok"}
    found = detect(
        {
            "/api/tags": page,
            "/props": Answer(200, anything),
            "/get_model_info": Answer(200, anything),
            "/info": Answer(200, {"version": "1"}),
            "/v1/models": Answer(200, GENERIC_MODELS),
        }
    )
    assert found is not None and found.kind == "openai"
    assert detect({"/api/tags": page, "/v1/models": Answer(500, None)}) is None
    assert detect({}) is None


def test_owned_by_names_the_kind_when_its_own_route_is_missing() -> None:
    # An SGLang without /get_model_info, a llama-server behind a proxy passing /v1 only.
    for owner in ("sglang", "llamacpp"):
        body = {"data": [{"id": "m", "owned_by": owner}]}
        found = detect({"/v1/models": Answer(200, body)})
        assert found is not None and found.kind == owner


def test_resolve_fills_in_and_checks_the_pair() -> None:
    assert resolve("openai", None) == ("openai", "openai")
    assert resolve("ollama", None) == ("ollama", "ollama")
    assert resolve(None, "vllm") == ("openai", "vllm")
    assert resolve("openai", "tgi") == ("openai", "tgi")
    with pytest.raises(ValueError, match="speaks the openai API, not ollama"):
        resolve("ollama", "sglang")
    with pytest.raises(ValueError, match="unknown server kind 'lmstudio'"):
        resolve(None, "lmstudio")
    with pytest.raises(ValueError, match="give the API"):
        resolve(None, None)


def test_a_node_without_a_server_kind_is_the_plain_server_of_its_api() -> None:
    assert kind_of("ollama", "") == "ollama"
    assert kind_of("openai", "") == "openai"
    assert kind_of("openai", "sglang") == "sglang"
    assert spec("no-such-kind").kind == "openai"


def test_only_kinds_whose_every_server_has_health_require_it() -> None:
    required = sorted(k for k in ("vllm", "sglang", "tgi") if not spec(k).health_optional)
    assert required == ["sglang", "tgi", "vllm"]
    # llama-cpp-python has no /health, nor do most other OpenAI-compatible servers.
    assert spec("llamacpp").health_optional and spec("openai").health_optional
    assert spec("ollama").health is None


def test_llamacpp_props_prefers_the_slots_window() -> None:
    props = {"default_generation_settings": {"n_ctx": 2048}, "n_ctx": 8192, "total_slots": 4}
    assert llamacpp_context_length(props) == 2048
    assert llamacpp_context_length({"n_ctx": 8192}) == 8192
    assert llamacpp_context_length({"default_generation_settings": {"n_ctx": 0}}) is None
    assert llamacpp_context_length(["not", "a", "dict"]) is None


def test_sglang_server_info_context_length_is_null_unless_set() -> None:
    assert sglang_context_length({"context_length": 16384}) == 16384
    assert sglang_context_length({"context_length": None}) is None
    assert sglang_context_length({"context_length": True}) is None


def test_tgi_info_gives_the_model_and_its_total_tokens() -> None:
    [model] = tgi_models({"model_id": "bigscience/bloom", "max_total_tokens": 4096})
    assert (model.name, model.context_length) == ("bigscience/bloom", 4096)
    with pytest.raises(UnexpectedAnswer, match="GET /info"):
        tgi_models({"error": "x"})


def test_v1_models_without_max_model_len_says_nothing_of_the_window() -> None:
    # llama-cpp-python and llama-server list no window; llama-server's n_ctx_train is the
    # trained length, not what it serves.
    body = {"data": [{"id": "m.gguf", "owned_by": "llamacpp", "meta": {"n_ctx_train": 131072}}]}
    assert [m.context_length for m in openai_models(body)] == [None]
    assert [m.context_length for m in openai_models(VLLM_MODELS)] == [32768]
