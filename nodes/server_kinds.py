"""What each kind of inference server serves besides its API, and telling the kinds apart from
their answers. Pure: plain data and functions over parsed JSON; the HTTP calls are in
`nodes.probes`.

A node has two kinds: `api_kind`, the wire protocol the gateway speaks to it (Ollama's native
API or OpenAI's), and `server_kind`, the server itself. The server kind decides what a probe
asks (only routes the server has: a 404 on a route it lacks must never mark it down), where
onboarding reads each model's context window, and whether load gauges can be scraped."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nodes.choices import ApiKind, ServerKind


@dataclass(frozen=True, slots=True)
class KindSpec:
    kind: str
    api_kind: str
    # GET this answers 200 once the server can serve; None: the model list is the only check.
    health: str | None
    # The route is missing on some servers of the kind (llama-cpp-python has no /health, nor
    # do LM Studio or llamafile): a 404 there says nothing about the server's health.
    health_optional: bool
    # Where the served models are listed: /api/tags, /v1/models or TGI's /info.
    models: str
    # Where the context window is said when the model list does not say it (None: nowhere).
    context: str | None
    # Whether the server exports Prometheus load gauges on /metrics (nodes.server_load).
    metrics: bool
    # Liveness for the node agent's restart check: cheap, and present on every such server.
    liveness: str


SPECS: Mapping[str, KindSpec] = {
    ServerKind.OLLAMA: KindSpec(
        ServerKind.OLLAMA, ApiKind.OLLAMA, None, False, "/api/tags", None, False, "/api/version"
    ),
    ServerKind.VLLM: KindSpec(
        ServerKind.VLLM, ApiKind.OPENAI, "/health", False, "/v1/models", None, True, "/health"
    ),
    # SGLang lists max_model_len in /v1/models since 0.4; older ones only in its server info.
    ServerKind.SGLANG: KindSpec(
        ServerKind.SGLANG,
        ApiKind.OPENAI,
        "/health",
        False,
        "/v1/models",
        "/get_server_info",
        True,
        "/health",
    ),
    # llama.cpp's C++ llama-server has /health, /props and (with --metrics) /metrics; the
    # python server (llama_cpp.server) has none of them.
    ServerKind.LLAMACPP: KindSpec(
        ServerKind.LLAMACPP,
        ApiKind.OPENAI,
        "/health",
        True,
        "/v1/models",
        "/props",
        True,
        "/v1/models",
    ),
    # TGI's /v1/models came late; /info (model_id, max_total_tokens) is in every version.
    ServerKind.TGI: KindSpec(
        ServerKind.TGI, ApiKind.OPENAI, "/health", False, "/info", "/info", True, "/health"
    ),
    ServerKind.OPENAI: KindSpec(
        ServerKind.OPENAI, ApiKind.OPENAI, "/health", True, "/v1/models", None, False, "/v1/models"
    ),
}


def spec(kind: str) -> KindSpec:
    """The kind's spec; an unknown name (an old row, a typo) is the generic server of its API."""
    return SPECS.get(kind) or SPECS[ServerKind.OPENAI]


def kind_of(api_kind: str, server_kind: str) -> str:
    """A node's server kind: the stored one, else the plain server of its API (nodes made before
    server kinds, or without saying)."""
    if server_kind:
        return server_kind
    return (ServerKind.OLLAMA if api_kind == ApiKind.OLLAMA else ServerKind.OPENAI).value


def resolve(api_kind: str | None, server_kind: str | None) -> tuple[str, str]:
    """The (api_kind, server_kind) pair to store from what an operator gave (either or both).
    ValueError with a message for the operator when they disagree or neither is given."""
    if server_kind:
        if server_kind not in SPECS:
            known = ", ".join(SPECS)
            raise ValueError(f"unknown server kind {server_kind!r} (known: {known})")
        wire = str(SPECS[server_kind].api_kind)
        if api_kind and api_kind != wire:
            raise ValueError(
                f"a {ServerKind(server_kind).label} server speaks the {wire} API, "
                f"not {api_kind}: leave the API out or give {wire}"
            )
        return wire, str(server_kind)
    if not api_kind:
        raise ValueError("give the API (ollama or openai) or the server kind")
    return api_kind, kind_of(api_kind, "")


# --- Detection --------------------------------------------------------------------------------

# The routes asked when detecting, in the order their answers are trusted.
DETECTION_ROUTES = ("/api/tags", "/props", "/get_model_info", "/info", "/v1/models")


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any = None  # parsed JSON, None when the body was not JSON


@dataclass(frozen=True, slots=True)
class Detection:
    kind: str
    evidence: str  # what gave it away, for the operator


def _json_dict(answer: Answer | None) -> dict[str, Any] | None:
    if answer is None or answer.status != 200 or not isinstance(answer.body, dict):
        return None
    return answer.body


def _model_entries(answer: Answer | None) -> list[dict[str, Any]] | None:
    body = _json_dict(answer)
    if body is None or not isinstance(body.get("data"), list):
        return None
    return [e for e in body["data"] if isinstance(e, dict)]


def detect(answers: Mapping[str, Answer]) -> Detection | None:
    """The kind of server that gave these answers (route → answer), or None when it speaks
    neither Ollama's API nor OpenAI's. Each route must answer in its server's own shape: a
    server that answers every path with 200 (a web app, a proxy's error page) is not taken
    for a llama.cpp or a TGI."""
    tags = _json_dict(answers.get("/api/tags"))
    if tags is not None and isinstance(tags.get("models"), list):
        return Detection(ServerKind.OLLAMA, "GET /api/tags lists its models")
    props = _json_dict(answers.get("/props"))
    if props is not None and (
        isinstance(props.get("default_generation_settings"), dict) or "n_ctx" in props
    ):
        return Detection(ServerKind.LLAMACPP, "GET /props answers with its generation settings")
    model_info = _json_dict(answers.get("/get_model_info"))
    if model_info is not None and "model_path" in model_info:
        return Detection(ServerKind.SGLANG, "GET /get_model_info answers")
    info = _json_dict(answers.get("/info"))
    if info is not None and isinstance(info.get("max_total_tokens"), int):
        return Detection(ServerKind.TGI, "GET /info says max_total_tokens")
    entries = _model_entries(answers.get("/v1/models"))
    if entries is None:
        return None
    owners = {str(e.get("owned_by", "")).lower() for e in entries}
    if "vllm" in owners:
        return Detection(ServerKind.VLLM, "GET /v1/models: owned_by vllm")
    if "sglang" in owners:
        return Detection(ServerKind.SGLANG, "GET /v1/models: owned_by sglang")
    if "llamacpp" in owners:
        return Detection(ServerKind.LLAMACPP, "GET /v1/models: owned_by llamacpp")
    return Detection(ServerKind.OPENAI, "GET /v1/models answers, and nothing more specific")
