"""Onboarding a node: register it, check it speaks its API, discover its models, create
profiles and deployments, warm prefetch profiles, and leave it READY — or say why not."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from django.conf import settings
from django.core.exceptions import ValidationError

from nodes import server_kinds
from nodes.choices import NodeState, ServerKind
from nodes.discovery import DiscoveredModel, UnexpectedAnswer, same_model
from nodes.models import Deployment, ModelProfile, Node, validate_base_url
from nodes.probes import ProbeFailure, detect_kind, discover, probe
from nodes.services import (
    deployment_ensure,
    deployment_record_warmup,
    node_mark_state,
    node_upsert,
    profile_for_discovered,
)
from nodes.warmup import WarmTarget, WarmupResult, warm

T = TypeVar("T")


class OnboardError(Exception):
    """Onboarding stopped; the message is meant for the operator."""


@dataclass
class OnboardRequest:
    name: str
    base_url: str
    api_kind: str | None  # either kind may be left out: the server kind is then detected
    gpu_type: str
    server_kind: str | None = None
    node_fields: dict[str, Any] = field(default_factory=dict)
    only_models: list[str] = field(default_factory=list)
    context_window: int | None = None
    prefetch: list[str] = field(default_factory=list)


def _run(make: Callable[[httpx.AsyncClient], Coroutine[Any, Any, T]], timeout: float) -> T:
    async def main() -> T:
        async with httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=3.0)) as client:
            return await make(client)

    return asyncio.run(main())


def onboard(request: OnboardRequest, progress: Callable[[str], None]) -> Node:
    base_url = request.base_url.rstrip("/")
    try:
        validate_base_url(base_url)
    except ValidationError as exc:
        raise OnboardError(f"base_url: {' '.join(exc.messages)}") from None
    api_kind, server_kind = _server_kind(request, base_url, progress)
    try:
        node, created = node_upsert(
            name=request.name,
            base_url=base_url,
            api_kind=api_kind,
            server_kind=server_kind,
            gpu_type=request.gpu_type,
            **request.node_fields,
        )
    except ValidationError as exc:
        raise OnboardError(_validation_message(exc)) from None
    progress(f"{'registered' if created else 'updated'} node {node.name} ({node.base_url})")

    progress(f"checking {node.base_url} answers as a {node.get_server_kind_display()} server …")
    try:
        models = _run(
            lambda c: discover(c, node.base_url, node.kind), settings.CLAWDBOT_PROBE_TIMEOUT_S
        )
    except (ProbeFailure, UnexpectedAnswer) as exc:
        node_mark_state(node=node, state=NodeState.DOWN, error=str(exc))
        hint = _other_kind_hint(node.base_url, node.kind) if request.server_kind else ""
        raise OnboardError(f"{node.name} is not usable: {exc}{hint}") from None
    progress(
        f"found {len(models)} model(s): " + (", ".join(_describe(m) for m in models) or "none")
    )

    chosen = _choose(models, request.only_models)
    unknown = _windows_unknown(chosen, request.context_window)
    if unknown:
        error = (
            f"the server does not say the context window of {', '.join(unknown)}; "
            "give --context-window with the window it serves" + _WINDOW_HINTS.get(node.kind, "")
        )
        node_mark_state(node=node, state=NodeState.DOWN, error=error)
        raise OnboardError(f"{node.name}: {error}")
    deployments = _deploy(node, chosen, request, progress)
    if not deployments:
        node_mark_state(node=node, state=NodeState.DOWN, error="no model can be deployed")
        raise OnboardError(
            f"{node.name} serves no model Clawdbot can deploy; "
            + ("pull one first (e.g. `ollama pull qwen3:32b`)" if not models else "see above")
        )

    for deployment in deployments:
        if deployment.profile.prefetch:
            _warm(node, deployment, progress)

    expected = [d.profile.upstream_model for d in deployments]
    result = _run(
        lambda c: probe(c, node.base_url, node.kind, expected),
        settings.CLAWDBOT_PROBE_TIMEOUT_S,
    )
    if not result.ok:
        node_mark_state(node=node, state=NodeState.DOWN, error=result.error)
        raise OnboardError(f"final probe of {node.name} failed: {result.error}")
    node_mark_state(node=node, state=NodeState.READY)
    progress(f"{node.name} is READY ({result.latency_ms:.0f} ms probe)")
    return node


def _server_kind(
    request: OnboardRequest, base_url: str, progress: Callable[[str], None]
) -> tuple[str, str]:
    """The (api_kind, server_kind) to register: as given, or detected from the server's
    answers (Ollama: given --api ollama, nothing to detect)."""
    try:
        api_kind, server_kind = server_kinds.resolve(request.api_kind, request.server_kind)
    except ValueError as exc:
        if request.api_kind or request.server_kind:
            raise OnboardError(str(exc)) from None
        api_kind, server_kind = "", ""
    if request.server_kind or api_kind == ServerKind.OLLAMA:
        progress(f"server kind: {ServerKind(server_kind).label} (as given)")
        return api_kind, server_kind
    try:
        found = _run(lambda c: detect_kind(c, base_url), settings.CLAWDBOT_PROBE_TIMEOUT_S)
    except ProbeFailure as exc:
        raise OnboardError(f"{request.name} is not usable: {exc}") from None
    wire = server_kinds.spec(found.kind).api_kind
    if request.api_kind and wire != request.api_kind:
        raise OnboardError(
            f"{base_url} is an Ollama server ({found.evidence}); register it with --api ollama "
            "(Clawdbot uses Ollama's native API so it can set num_ctx)"
        )
    progress(f"detected a {ServerKind(found.kind).label} server: {found.evidence}")
    return wire, found.kind


def _other_kind_hint(base_url: str, given: str) -> str:
    """When a server does not answer as the kind it was given, what it does answer as."""
    try:
        found = _run(lambda c: detect_kind(c, base_url), settings.CLAWDBOT_PROBE_TIMEOUT_S)
    except ProbeFailure:
        return ""
    if found.kind == given:
        return ""
    return (
        f"; it answers as a {ServerKind(found.kind).label} server ({found.evidence}): "
        f"register it with --server-kind {found.kind}, or leave the kind out to detect it"
    )


# Where each kind's operator finds the window the server was started with.
_WINDOW_HINTS: dict[str, str] = {
    ServerKind.OPENAI: " (llama-cpp-python: its --n_ctx; LM Studio, LocalAI: the model's "
    "context length setting)",
    ServerKind.LLAMACPP: " (llama.cpp: its --ctx-size divided by --parallel)",
    ServerKind.SGLANG: " (SGLang: its --context-length, or the model's)",
}


def _windows_unknown(models: list[DiscoveredModel], requested: int | None) -> list[str]:
    """Models whose profile would need a window nobody gave: the server does not say it, no
    --context-window, and no existing profile (which keeps its own) serves the model."""
    if requested:
        return []
    unknown = [m.name for m in models if m.context_length is None]
    if not unknown:
        return []
    upstreams = list(ModelProfile.objects.values_list("upstream_model", "model_id"))
    return [
        name
        for name in unknown
        if not any(same_model(up, name) or model_id == name for up, model_id in upstreams)
    ]


def _describe(model: DiscoveredModel) -> str:
    if model.context_length:
        return f"{model.name} (context {model.context_length})"
    return model.name


def _choose(models: list[DiscoveredModel], only: list[str]) -> list[DiscoveredModel]:
    if not only:
        return models
    missing = [m for m in only if not any(same_model(m, d.name) for d in models)]
    if missing:
        served = ", ".join(d.name for d in models) or "nothing"
        raise OnboardError(f"the node does not serve {', '.join(missing)} (it serves {served})")
    return [d for d in models if any(same_model(m, d.name) for m in only)]


def _deploy(
    node: Node,
    models: list[DiscoveredModel],
    request: OnboardRequest,
    progress: Callable[[str], None],
) -> list[Deployment]:
    deployments = []
    for model in models:
        wants_prefetch = any(same_model(p, model.name) for p in request.prefetch) or (
            "all" in request.prefetch
        )
        try:
            profile, made = profile_for_discovered(
                model=model,
                context_window=request.context_window,
                prefetch=True if wants_prefetch else None,
            )
            deployment, deployed = deployment_ensure(node=node, profile=profile)
        except ValidationError as exc:
            progress(f"skipped {model.name}: {_validation_message(exc)}")
            continue
        progress(
            f"{'created' if made else 'using'} profile {profile.model_id} "
            f"(context window {profile.context_window}, max output {profile.max_output_tokens})"
            f"{'; deployed' if deployed else ''}"
        )
        deployments.append(deployment)
    return deployments


def _warm(node: Node, deployment: Deployment, progress: Callable[[str], None]) -> None:
    profile = deployment.profile
    progress(f"warming {profile.model_id} on {node.name} (keep_alive {profile.keep_alive}) …")
    target = WarmTarget.of(deployment)
    result: WarmupResult = _run(lambda c: warm(c, target), settings.CLAWDBOT_WARMUP_TIMEOUT_S)
    deployment_record_warmup(deployment=deployment, result=result)
    if not result.ok:
        node_mark_state(node=node, state=NodeState.DOWN, error=f"warmup failed: {result.error}")
        raise OnboardError(f"warming {profile.model_id} failed: {result.error}")
    extra = f", warmup prompt {result.prompt_ms} ms" if result.prompt_ms is not None else ""
    progress(f"loaded {profile.model_id} in {result.load_ms} ms{extra}")


def _validation_message(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(
            " ".join(v) if k == "__all__" else f"{k}: {' '.join(v)}"
            for k, v in exc.message_dict.items()
        )
    return " ".join(exc.messages)
