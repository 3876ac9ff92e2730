"""Loading a model profile on a node before traffic needs it: Ollama's preload (a chat with
no messages and the profile's keep_alive) and then the profile's warmup prompt."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from nodes.choices import ApiKind
from nodes.keepalive import keep_alive_wire_value

if TYPE_CHECKING:
    from nodes.models import Deployment


@dataclass(frozen=True, slots=True)
class WarmTarget:
    base_url: str
    api_kind: str
    upstream_model: str
    context_window: int
    keep_alive: str
    warmup_prompt: str

    @classmethod
    def of(cls, deployment: Deployment) -> WarmTarget:
        node, profile = deployment.node, deployment.profile
        return cls(
            base_url=node.base_url,
            api_kind=node.api_kind,
            upstream_model=profile.upstream_model,
            context_window=profile.context_window,
            keep_alive=profile.keep_alive,
            warmup_prompt=profile.warmup_prompt,
        )


@dataclass(frozen=True, slots=True)
class WarmupResult:
    ok: bool
    load_ms: int
    prompt_ms: int | None = None
    error: str = ""


def ollama_preload_body(target: WarmTarget) -> dict[str, object]:
    # num_ctx must match what the gateway will send: a different num_ctx reloads the model.
    return {
        "model": target.upstream_model,
        "messages": [],
        "stream": False,
        "keep_alive": keep_alive_wire_value(target.keep_alive),
        "options": {"num_ctx": target.context_window},
    }


def warmup_prompt_body(target: WarmTarget) -> tuple[str, dict[str, object]]:
    """(path, body) of the one-token request that runs the profile's warmup prompt."""
    messages = [{"role": "user", "content": target.warmup_prompt}]
    if target.api_kind == ApiKind.OLLAMA:
        return "/api/chat", {
            "model": target.upstream_model,
            "messages": messages,
            "stream": False,
            "keep_alive": keep_alive_wire_value(target.keep_alive),
            "options": {"num_ctx": target.context_window, "num_predict": 1},
        }
    return "/v1/chat/completions", {
        "model": target.upstream_model,
        "messages": messages,
        "max_tokens": 1,
        "stream": False,
    }


async def warm(client: httpx.AsyncClient, target: WarmTarget) -> WarmupResult:
    base = target.base_url.rstrip("/")
    started = time.perf_counter()
    try:
        if target.api_kind == ApiKind.OLLAMA:
            response = await client.post(base + "/api/chat", json=ollama_preload_body(target))
            if response.status_code != 200:
                return WarmupResult(False, _ms(started), error=_answer_error(response, "preload"))
        load_ms = _ms(started)
        if not target.warmup_prompt:
            return WarmupResult(True, load_ms)
        prompt_started = time.perf_counter()
        path, body = warmup_prompt_body(target)
        response = await client.post(base + path, json=body)
        if response.status_code != 200:
            return WarmupResult(False, load_ms, error=_answer_error(response, "warmup prompt"))
        return WarmupResult(True, load_ms, prompt_ms=_ms(prompt_started))
    except httpx.TimeoutException:
        return WarmupResult(False, _ms(started), error="timed out while loading the model")
    except httpx.HTTPError as exc:
        return WarmupResult(False, _ms(started), error=f"{exc.__class__.__name__}: {exc}")


def _answer_error(response: httpx.Response, step: str) -> str:
    try:
        detail = response.json().get("error")
        if isinstance(detail, dict):
            detail = detail.get("message")
    except (ValueError, AttributeError):
        detail = response.text[:200]
    return f"{step} answered HTTP {response.status_code}: {detail}"


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
