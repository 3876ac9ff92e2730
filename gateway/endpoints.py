"""From a parsed body to a routable call: validation, the key's model access, the context
plan. No I/O."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from django.conf import settings

from gateway import prefixes
from gateway.errors import GatewayError, model_not_found
from gateway.exchange import Exchange
from gateway.plan import Plan, plan_embedding, plan_generation
from gateway.routing import Request
from gateway.snapshot import ProfileView, Snapshot
from gateway.tokens import (
    estimate_chat_prompt_tokens,
    estimate_completion_prompt_tokens,
    estimate_text_tokens,
)
from gateway.upstreams.adapters import EmbeddingCall, GenerationCall
from gateway.upstreams.contract import UpstreamCall
from gateway.validation import validate_chat, validate_completion, validate_embedding

GENERATION_ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}


def _profile(snapshot: Snapshot, ex: Exchange, model: str) -> ProfileView:
    ex.model = model
    profile = snapshot.profiles.get(model)
    if profile is None or ex.key is None or not ex.key.may_use(model):
        # Same answer whether the model is unknown or just not this key's: no probing.
        raise model_not_found(model)
    ex.served_model = profile.model_id
    return profile


def _downgraded(ex: Exchange, fallback: ProfileView) -> str:
    ex.downgraded_from, ex.served_model = ex.served_model, fallback.model_id
    return fallback.model_id


def _estimate(ex: Exchange, prompt: int, requested: int | None, budget: int | None) -> None:
    """What the request is expected to cost: the prompt (checked against the node's count
    afterwards) and, for the tokens-per-minute limit, the prompt plus the output the client
    asked for as clamped to the profile (a max_tokens above the profile's maximum can never
    be generated, so it must not count against the key)."""
    ex.prompt_estimate = prompt
    ex.estimated_tokens = prompt + (budget or 0) if requested is not None else prompt


def _routing(
    profile: ProfileView,
    prompt: int,
    requested: int | None,
    plan: Plan,
    found: prefixes.Prefixes,
    stream: bool,
) -> Request:
    """Without max_tokens the answer's length is unknown (the budget is the whole window):
    routing then takes the model's usual answer length."""
    output = plan.max_tokens if requested is not None else None
    return Request(profile.model_id, prompt, output, found, stream)


def _follows(prompt: int, ex: Exchange) -> bool:
    """Is this request's conversation followed for affinity (gateway.prefixes)?"""
    return settings.CLAWDBOT_AFFINITY and prefixes.worth_following(prompt, ex.session)


def _fallback(
    snapshot: Snapshot, profile: ProfileView, prompt: int, requested: int | None, param: str
) -> tuple[ProfileView, Plan] | None:
    """The profile's fallback and its plan, when there is one that can take the request: a
    node ready to serve it, and a window the request fits (else it is served as asked)."""
    fallback = snapshot.profiles.get(profile.fallback) if profile.fallback else None
    if fallback is None or not snapshot.routable(fallback.model_id):
        return None
    try:
        return fallback, plan_generation(fallback, prompt, requested, param)
    except GatewayError:
        return None


def prepare(
    endpoint: str, payload: Any, snapshot: Snapshot, ex: Exchange, *, downgrade: bool = False
) -> UpstreamCall:
    """`downgrade` (degradation tier 2): a chat or text completion for a profile with a
    fallback goes to the fallback, and its answer names the fallback's model. Embeddings
    never do: another model's vectors would not match the client's."""
    if endpoint == "chat":
        chat = validate_chat(payload)
        profile = _profile(snapshot, ex, chat.model)
        ex.stream = chat.stream
        prompt = estimate_chat_prompt_tokens(chat.messages, chat.tools)
        plan = plan_generation(profile, prompt, chat.max_tokens)
        if downgrade and (
            fallback := _fallback(snapshot, profile, prompt, chat.max_tokens, "messages")
        ):
            profile, plan = fallback
            chat = replace(chat, model=_downgraded(ex, profile))
        _estimate(ex, prompt, chat.max_tokens, plan.max_tokens)
        found = (
            prefixes.chat(profile.model_id, chat.messages, chat.tools, ex.session)
            if _follows(prompt, ex)
            else prefixes.NONE
        )
        ex.routing = _routing(profile, prompt, chat.max_tokens, plan, found, chat.stream)
        return GenerationCall(chat, profile, plan)
    if endpoint == "completions":
        completion = validate_completion(payload)
        profile = _profile(snapshot, ex, completion.model)
        ex.stream = completion.stream
        prompt = estimate_completion_prompt_tokens(completion.prompt, completion.suffix)
        plan = plan_generation(profile, prompt, completion.max_tokens, "prompt")
        if downgrade and (
            fallback := _fallback(snapshot, profile, prompt, completion.max_tokens, "prompt")
        ):
            profile, plan = fallback
            completion = replace(completion, model=_downgraded(ex, profile))
        _estimate(ex, prompt, completion.max_tokens, plan.max_tokens)
        found = (
            prefixes.completion(profile.model_id, completion.prompt, ex.session)
            if _follows(prompt, ex)
            else prefixes.NONE
        )
        ex.routing = _routing(
            profile, prompt, completion.max_tokens, plan, found, completion.stream
        )
        return GenerationCall(completion, profile, plan)
    embedding = validate_embedding(payload)
    profile = _profile(snapshot, ex, embedding.model)
    texts = [embedding.input] if isinstance(embedding.input, str) else embedding.input
    sizes = [estimate_text_tokens(t) for t in texts]
    plan_embedding(profile, sum(sizes), max(sizes, default=0))
    ex.prompt_estimate = ex.estimated_tokens = sum(sizes)
    ex.routing = Request(profile.model_id, sum(sizes), 0)
    return EmbeddingCall(embedding, profile)
