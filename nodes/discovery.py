"""Reading what a node serves out of its API answers. Pure functions over parsed JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class DiscoveredModel:
    name: str
    context_length: int | None = None


class UnexpectedAnswer(ValueError):
    """The node answered, but not in the shape its API kind promises."""


def ollama_tag_names(body: Any) -> list[str]:
    """Model names from `GET /api/tags`."""
    if not isinstance(body, dict) or not isinstance(body.get("models"), list):
        raise UnexpectedAnswer('GET /api/tags did not return {"models": [...]}')
    names = []
    for entry in body["models"]:
        if isinstance(entry, dict) and isinstance(entry.get("name") or entry.get("model"), str):
            names.append(entry.get("name") or entry["model"])
    return names


def ollama_context_length(show: Any) -> int | None:
    """The trained context length from `POST /api/show`: model_info["<arch>.context_length"]."""
    if not isinstance(show, dict):
        return None
    info = show.get("model_info")
    if not isinstance(info, dict):
        return None
    arch = info.get("general.architecture")
    value = info.get(f"{arch}.context_length") if isinstance(arch, str) else None
    if value is None:
        # Some builds omit the architecture key; any "*.context_length" is the same figure.
        value = next((v for k, v in info.items() if k.endswith(".context_length")), None)
    return value if isinstance(value, int) and value > 0 else None


def openai_models(body: Any) -> list[DiscoveredModel]:
    """Models from an OpenAI-compatible `GET /v1/models`; vLLM (and SGLang since 0.4) add
    `max_model_len`."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise UnexpectedAnswer('GET /v1/models did not return {"data": [...]}')
    found = []
    for entry in body["data"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        found.append(
            DiscoveredModel(name=entry["id"], context_length=_positive(entry.get("max_model_len")))
        )
    return found


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def llamacpp_context_length(props: Any) -> int | None:
    """A request's window from llama-server's `GET /props`: the slot's `n_ctx` (the server's
    context divided among its parallel slots), else the top-level `n_ctx` of newer builds."""
    if not isinstance(props, dict):
        return None
    settings = props.get("default_generation_settings")
    if isinstance(settings, dict) and _positive(settings.get("n_ctx")):
        return _positive(settings.get("n_ctx"))
    return _positive(props.get("n_ctx"))


def sglang_context_length(server_info: Any) -> int | None:
    """SGLang's `GET /get_server_info` (its server arguments): `context_length`, which is null
    unless the server was started with --context-length."""
    if not isinstance(server_info, dict):
        return None
    return _positive(server_info.get("context_length"))


def tgi_models(info: Any) -> list[DiscoveredModel]:
    """TGI serves one model: `GET /info` gives its id and `max_total_tokens`, the most prompt
    plus output tokens a request may have."""
    if not isinstance(info, dict) or not isinstance(info.get("model_id"), str):
        raise UnexpectedAnswer('GET /info did not return {"model_id": ...}')
    return [
        DiscoveredModel(
            name=info["model_id"], context_length=_positive(info.get("max_total_tokens"))
        )
    ]


def context_from(kind: str, body: Any) -> int | None:
    """The context window a kind's context route says (server_kinds.KindSpec.context)."""
    if kind == "llamacpp":
        return llamacpp_context_length(body)
    if kind == "sglang":
        return sglang_context_length(body)
    if kind == "tgi":
        models = tgi_models(body) if isinstance(body, dict) and "model_id" in body else []
        return models[0].context_length if models else None
    return None


def same_model(a: str, b: str) -> bool:
    """Ollama names default their tag to `latest`: `llama3` and `llama3:latest` are one model."""

    def norm(name: str) -> str:
        return name if ":" in name else f"{name}:latest"

    return a == b or norm(a) == norm(b)
