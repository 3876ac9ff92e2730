"""Probing a node over HTTP: is it up, does it speak the API it was registered with, and
does it serve the models deployed on it. Each probe is a few short GETs."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace

import httpx

from nodes import server_kinds
from nodes.choices import ApiKind
from nodes.discovery import (
    DiscoveredModel,
    UnexpectedAnswer,
    context_from,
    ollama_context_length,
    ollama_tag_names,
    openai_models,
    same_model,
    tgi_models,
)
from nodes.server_kinds import Answer, Detection


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
    client: httpx.AsyncClient, base_url: str, kind: str, *, with_context: bool = True
) -> list[DiscoveredModel]:
    """The models a node of this server kind serves (`ollama` and `openai` also name the plain
    server of each API). With `with_context`, context windows the model list does not say
    are read from the kind's own route (Ollama: one `/api/show` per model), so the periodic
    probe leaves it off. Only routes the kind has are asked."""
    spec = server_kinds.spec(kind)
    if spec.api_kind == ApiKind.OLLAMA:
        names = ollama_tag_names(await _get_json(client, base_url, "/api/tags"))
        found = []
        for name in names:
            length = None
            if with_context:
                show = await _request(client, "POST", base_url, "/api/show", json={"model": name})
                length = ollama_context_length(show.json())
            found.append(DiscoveredModel(name=name, context_length=length))
        return found
    if spec.health is not None:
        await _health(client, base_url, spec)
    if spec.models == "/info":
        return tgi_models(await _get_json(client, base_url, "/info"))
    models = openai_models(await _get_json(client, base_url, spec.models))
    if with_context and spec.context and any(m.context_length is None for m in models):
        length = await _context(client, base_url, spec)
        models = [m if m.context_length else replace(m, context_length=length) for m in models]
    return models


async def _health(client: httpx.AsyncClient, base_url: str, spec: server_kinds.KindSpec) -> None:
    assert spec.health is not None
    if not spec.health_optional:
        await _request(client, "GET", base_url, spec.health)
        return
    try:
        response = await client.get(_url(base_url, spec.health))
    except httpx.ConnectError as exc:
        raise ProbeFailure(
            f"cannot connect to {base_url} ({exc or 'connection refused'})"
        ) from None
    except httpx.TimeoutException:
        raise ProbeFailure(f"GET {spec.health} timed out") from None
    except httpx.HTTPError:
        return  # the model list, asked next, says what is wrong
    # 404/405: the server has no such route. Any other answer is its word on its health.
    if response.status_code not in (200, 404, 405):
        raise ProbeFailure(f"GET {spec.health} answered HTTP {response.status_code}")


async def _context(
    client: httpx.AsyncClient, base_url: str, spec: server_kinds.KindSpec
) -> int | None:
    """The window from the kind's context route; None when it cannot be read (a server of
    the kind without the route, an old version): onboarding then asks the operator."""
    assert spec.context is not None
    try:
        return context_from(spec.kind, await _get_json(client, base_url, spec.context))
    except (ProbeFailure, UnexpectedAnswer):
        return None


async def detect_kind(client: httpx.AsyncClient, base_url: str) -> Detection:
    """Which kind of server answers at `base_url`: the detection routes asked at once, their
    answers judged by `server_kinds.detect`. ProbeFailure when nothing answers in a known
    shape, or the server cannot be reached."""

    async def ask(path: str) -> Answer | None:
        try:
            response = await client.get(_url(base_url, path))
        except httpx.ConnectError as exc:
            raise ProbeFailure(
                f"cannot connect to {base_url} ({exc or 'connection refused'})"
            ) from None
        except httpx.TimeoutException:
            return None
        except httpx.HTTPError:
            return None
        try:
            body = response.json() if response.status_code == 200 else None
        except ValueError:
            body = None
        return Answer(response.status_code, body)

    answers = await asyncio.gather(*(ask(p) for p in server_kinds.DETECTION_ROUTES))
    found = server_kinds.detect(
        {p: a for p, a in zip(server_kinds.DETECTION_ROUTES, answers, strict=True) if a}
    )
    if found is None:
        statuses = ", ".join(
            f"{p} {a.status if a else 'no answer'}"
            for p, a in zip(server_kinds.DETECTION_ROUTES, answers, strict=True)
        )
        raise ProbeFailure(
            f"{base_url} does not answer like an inference server ({statuses}); give its "
            "kind with --server-kind, or check the URL (the server's root, without /v1)"
        )
    return found


async def probe(
    client: httpx.AsyncClient,
    base_url: str,
    kind: str,
    expected_models: list[str],
    *,
    with_context: bool = False,
) -> ProbeResult:
    """One health probe: the API answers and every deployed model is listed."""
    started = time.perf_counter()
    try:
        models = await discover(client, base_url, kind, with_context=with_context)
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
