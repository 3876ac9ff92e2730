"""Probing a node over HTTP: is it up, does it speak the API it was registered with, and
does it serve the models deployed on it. Each probe is a few short GETs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx

from nodes.choices import ApiKind
from nodes.discovery import (
    DiscoveredModel,
    UnexpectedAnswer,
    ollama_context_length,
    ollama_tag_names,
    openai_models,
    same_model,
)


@dataclass(slots=True)
class ProbeResult:
    ok: bool
    latency_ms: float
    models: list[DiscoveredModel] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    error: str = ""


class ProbeFailure(Exception):
    """A probe step failed; the message says what an operator should look at."""


def _url(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + path


async def _get_json(client: httpx.AsyncClient, base_url: str, path: str) -> object:
    response = await _request(client, "GET", base_url, path)
    try:
        return response.json()
    except ValueError:
        raise ProbeFailure(f"GET {path} answered {response.status_code} but not JSON") from None


async def _request(
    client: httpx.AsyncClient, method: str, base_url: str, path: str, **kwargs: object
) -> httpx.Response:
    try:
        response = await client.request(method, _url(base_url, path), **kwargs)  # type: ignore[arg-type]
    except httpx.ConnectError as exc:
        raise ProbeFailure(
            f"cannot connect to {base_url} ({exc or 'connection refused'})"
        ) from None
    except httpx.TimeoutException:
        raise ProbeFailure(f"{method} {path} timed out") from None
    except httpx.HTTPError as exc:
        raise ProbeFailure(f"{method} {path} failed: {exc.__class__.__name__}: {exc}") from None
    if response.status_code != 200:
        raise ProbeFailure(
            f"{method} {path} answered HTTP {response.status_code}"
            + await _kind_hint(client, base_url, response.status_code, path)
        )
    return response


async def _kind_hint(client: httpx.AsyncClient, base_url: str, status: int, path: str) -> str:
    """When a path of one API kind is missing, say whether the node speaks the other one."""
    if status != 404:
        return ""
    try:
        if path.startswith("/api/"):
            other = await client.get(_url(base_url, "/v1/models"))
            if other.status_code == 200:
                return (
                    ": this node does not speak Ollama's native API but answers /v1/models; "
                    "register it with --api openai"
                )
        else:
            other = await client.get(_url(base_url, "/api/version"))
            if other.status_code == 200:
                return (
                    ": this node is an Ollama server; register it with --api ollama "
                    "(Clawdbot uses Ollama's native API so it can set num_ctx)"
                )
    except httpx.HTTPError:
        pass
    return ""


async def discover(
    client: httpx.AsyncClient, base_url: str, api_kind: str, *, with_context: bool = True
) -> list[DiscoveredModel]:
    """The models a node serves. With `with_context`, Ollama's context lengths are read too
    (one `/api/show` per model, so the periodic probe leaves it off)."""
    if api_kind == ApiKind.OLLAMA:
        names = ollama_tag_names(await _get_json(client, base_url, "/api/tags"))
        found = []
        for name in names:
            length = None
            if with_context:
                show = await _request(client, "POST", base_url, "/api/show", json={"model": name})
                length = ollama_context_length(show.json())
            found.append(DiscoveredModel(name=name, context_length=length))
        return found
    await _request(client, "GET", base_url, "/health")
    return openai_models(await _get_json(client, base_url, "/v1/models"))


async def probe(
    client: httpx.AsyncClient,
    base_url: str,
    api_kind: str,
    expected_models: list[str],
    *,
    with_context: bool = False,
) -> ProbeResult:
    """One health probe: the API answers and every deployed model is listed."""
    started = time.perf_counter()
    try:
        models = await discover(client, base_url, api_kind, with_context=with_context)
    except (ProbeFailure, UnexpectedAnswer) as exc:
        return ProbeResult(ok=False, latency_ms=_ms_since(started), error=str(exc))
    missing = [m for m in expected_models if not any(same_model(m, d.name) for d in models)]
    error = ""
    if missing:
        error = "not served by the node: " + ", ".join(missing)
    return ProbeResult(
        ok=not missing, latency_ms=_ms_since(started), models=models, missing=missing, error=error
    )


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
