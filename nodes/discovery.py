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
    """Models from an OpenAI-compatible `GET /v1/models`; vLLM adds `max_model_len`."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise UnexpectedAnswer('GET /v1/models did not return {"data": [...]}')
    found = []
    for entry in body["data"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        length = entry.get("max_model_len")
        found.append(
            DiscoveredModel(
                name=entry["id"],
                context_length=length if isinstance(length, int) and length > 0 else None,
            )
        )
    return found


def same_model(a: str, b: str) -> bool:
    """Ollama names default their tag to `latest`: `llama3` and `llama3:latest` are one model."""

    def norm(name: str) -> str:
        return name if ":" in name else f"{name}:latest"

    return a == b or norm(a) == norm(b)
