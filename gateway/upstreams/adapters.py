"""Binding a validated client request to one node's protocol: the path and body to send,
how to translate the answer, stream and errors. Ollama nodes get the native API (so num_ctx
and keep_alive are always set); OpenAI-compatible nodes get the client's body passed through."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import GatewayError
from gateway.ids import new_id
from gateway.plan import Plan
from gateway.snapshot import NodeView, ProfileView
from gateway.upstreams import ollama, openai
from gateway.validation import ChatRequest, CompletionRequest, EmbeddingRequest
from nodes.choices import ApiKind
from nodes.keepalive import keep_alive_wire_value


def _usage_counts(body: dict[str, Any]) -> tuple[int | None, int | None]:
    usage = body.get("usage")
    if not isinstance(usage, dict):  # absent, or not the object the protocol says
        return None, None
    return usage.get("prompt_tokens"), usage.get("completion_tokens")


@dataclass
class _Ids:
    completion_id: str
    created: int

    @classmethod
    def new(cls, prefix: str) -> _Ids:
        return cls(prefix + new_id(), int(time.time()))


@dataclass
class OllamaGenerationCall:
    """Chat (/api/chat) or text completion (/api/generate) on an Ollama node."""

    request: ChatRequest | CompletionRequest
    profile: ProfileView
    plan: Plan
    ids: _Ids
    path: str = ""
    body: bytes = b""
    timings: tuple[float, float] | None = None  # the answer's, once translated (routing)

    def __post_init__(self) -> None:
        chat = isinstance(self.request, ChatRequest)
        self.path = "/api/chat" if chat else "/api/generate"
        to_ollama = ollama.chat_to_ollama if chat else ollama.completion_to_ollama
        self.body = orjson.dumps(
            to_ollama(
                self.request,  # type: ignore[arg-type]
                upstream_model=self.profile.upstream_model,
                num_ctx=self.profile.context_window,
                keep_alive=keep_alive_wire_value(self.profile.keep_alive),
                max_tokens=self.plan.max_tokens,
            )
        )

    def translate(self, raw: bytes) -> tuple[bytes, int | None, int | None]:
        to_openai = (
            ollama.ollama_chat_to_openai
            if isinstance(self.request, ChatRequest)
            else ollama.ollama_generate_to_openai
        )
        native = _json(raw)
        answer = to_openai(
            native,
            model=self.request.model,
            completion_id=self.ids.completion_id,
            created=self.ids.created,
        )
        self.timings = ollama.native_timings(native)
        # The node's own counts: the answer's usage says 0 for a count Ollama left out, which
        # for the truncation check must stay unknown (PROTOCOLS.md, "Missing metric fields").
        return orjson.dumps(answer), *_native_counts(native)

    def relay(self) -> ollama.NdjsonRelay:
        translator = (
            ollama.ChatStreamTranslator
            if isinstance(self.request, ChatRequest)
            else ollama.CompletionStreamTranslator
        )
        return ollama.NdjsonRelay(
            translator(
                self.request.model,
                self.ids.completion_id,
                self.ids.created,
                self.request.include_usage,
            )
        )

    def error(self, status: int, raw: bytes) -> GatewayError:
        return ollama.ollama_error(status, raw, model=self.request.model)


@dataclass
class OllamaEmbeddingCall:
    request: EmbeddingRequest
    profile: ProfileView
    path: str = "/api/embed"
    body: bytes = b""

    def __post_init__(self) -> None:
        self.body = orjson.dumps(
            ollama.embedding_to_ollama(
                self.request,
                upstream_model=self.profile.upstream_model,
                keep_alive=keep_alive_wire_value(self.profile.keep_alive),
                num_ctx=self.profile.context_window,
            )
        )

    def translate(self, raw: bytes) -> tuple[bytes, int | None, int | None]:
        native = _json(raw)
        answer = ollama.ollama_embed_to_openai(
            native,
            self.request.model,
            encoding_format=self.request.encoding_format,
            dimensions=self.request.dimensions,
        )
        prompt, _ = _native_counts(native)  # left out: unknown, not 0 (see above)
        return orjson.dumps(answer), prompt, None

    def relay(self) -> ollama.NdjsonRelay:
        raise AssertionError("embeddings do not stream")

    def error(self, status: int, raw: bytes) -> GatewayError:
        return ollama.ollama_error(status, raw, model=self.request.model)


@dataclass
class PassthroughCall:
    """OpenAI-compatible nodes: the client's body with the upstream model name and clamped
    max tokens; answers get the client's model id back."""

    path: str
    model: str
    upstream_body: dict[str, Any]
    client_wants_usage: bool
    body: bytes = b""
    cached_tokens: int | None = None  # the answer's, once translated (routing learns from it)

    def __post_init__(self) -> None:
        self.body = orjson.dumps(self.upstream_body)

    def translate(self, raw: bytes) -> tuple[bytes, int | None, int | None]:
        answer = _json(raw)  # a 200 that is not a JSON object is a failing node, not an answer
        self.cached_tokens = openai.cached_tokens(answer.get("usage"))
        return openai.rewrite_response(raw, self.model), *_usage_counts(answer)

    def relay(self) -> openai.SseRelay:
        return openai.SseRelay(self.model, strip_usage=not self.client_wants_usage)

    def error(self, status: int, raw: bytes) -> GatewayError:
        return openai.normalise_error(status, raw, model=self.model)


def _native_counts(native: dict[str, Any]) -> tuple[int | None, int | None]:
    prompt, completion = native.get("prompt_eval_count"), native.get("eval_count")
    return (
        prompt if isinstance(prompt, int) else None,
        completion if isinstance(completion, int) else None,
    )


def _passthrough_max_tokens(
    request: ChatRequest | CompletionRequest, plan: Plan, profile: ProfileView
) -> int | None:
    """max_tokens for an OpenAI-compatible node. Clamped, or the profile's maximum when the
    client sent none and that maximum binds: vLLM would otherwise generate to the window's
    end. When the window's remaining room binds instead, the node's own default (the room
    by its exact count) is better than our estimate, so nothing is sent."""
    profile_cap_binds = plan.max_tokens == profile.max_output_tokens
    if plan.clamped or (request.max_tokens is None and profile_cap_binds):
        return plan.max_tokens
    return request.max_tokens


class NotAnAnswer(GatewayError):
    """A 200 from the node that is not a JSON object: the node is at fault (the proxy tries
    another), unlike errors raised while translating a real answer, which are the client's."""


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise NotAnAnswer(502, "The node answered with something that is not JSON.", "server_error")
    return value


@dataclass
class GenerationCall:
    """A chat or text completion, bound to whichever kind of node the balancer picks."""

    request: ChatRequest | CompletionRequest
    profile: ProfileView
    plan: Plan

    def for_node(self, node: NodeView) -> OllamaGenerationCall | PassthroughCall:
        chat = isinstance(self.request, ChatRequest)
        if node.api_kind == ApiKind.OLLAMA:
            prefix = "chatcmpl-" if chat else "cmpl-"
            return OllamaGenerationCall(self.request, self.profile, self.plan, _Ids.new(prefix))
        return PassthroughCall(
            "/v1/chat/completions" if chat else "/v1/completions",
            self.request.model,
            openai.prepare_body(
                self.request.raw,
                upstream_model=self.profile.upstream_model,
                max_tokens=_passthrough_max_tokens(self.request, self.plan, self.profile),
                stream=self.request.stream,
                force_usage=self.request.stream,
            ),
            self.request.include_usage,
        )


@dataclass
class EmbeddingCall:
    request: EmbeddingRequest
    profile: ProfileView

    def for_node(self, node: NodeView) -> OllamaEmbeddingCall | PassthroughCall:
        if node.api_kind == ApiKind.OLLAMA:
            return OllamaEmbeddingCall(self.request, self.profile)
        return PassthroughCall(
            "/v1/embeddings",
            self.request.model,
            openai.prepare_body(
                self.request.raw,
                upstream_model=self.profile.upstream_model,
                max_tokens=None,
                stream=False,
            ),
            False,
        )
