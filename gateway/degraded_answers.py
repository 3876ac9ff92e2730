"""Answers the gateway gives itself when the cluster fails a request in a degradation tier: a
cached answer to the same request, or the profile's configured static answer (tier 3), or a
503 saying the model is unavailable. For a streaming client the answer is replayed as SSE
events (role, content, finish, usage when asked for, [DONE]), as a node's stream would be.
Pure functions."""

from __future__ import annotations

import math
import time
from typing import Any

import orjson

from gateway.errors import GatewayError
from gateway.ids import new_id
from gateway.refusals import MAX_RETRY_AFTER_S

STATIC_FINGERPRINT = "fp_clawdbot_static"
OBJECTS = {"chat": "chat.completion", "completions": "text_completion"}
CHUNK_OBJECTS = {"chat.completion": "chat.completion.chunk", "text_completion": "text_completion"}
_DONE = b"data: [DONE]\n\n"


def _fresh_ids(endpoint: str) -> tuple[str, int]:
    return ("chatcmpl-" if endpoint == "chat" else "cmpl-") + new_id(), int(time.time())


def static_answer(endpoint: str, text: str, *, model: str) -> dict[str, Any]:
    """The profile's configured answer as a complete chat.completion or text_completion. No
    model ran: every token count is 0."""
    completion_id, created = _fresh_ids(endpoint)
    if endpoint == "chat":
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    else:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}
    return {
        "id": completion_id,
        "object": OBJECTS[endpoint],
        "created": created,
        "model": model,
        "system_fingerprint": STATIC_FINGERPRINT,
        "choices": [choice],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def cached_answer(raw: bytes, endpoint: str) -> dict[str, Any] | None:
    """A stored answer, with a new id and creation time (it is a new response); None when
    it is not an answer of this endpoint's kind (written by another version, say)."""
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if (
        not isinstance(answer, dict)
        or answer.get("object") != OBJECTS.get(endpoint)
        or not isinstance(answer.get("choices"), list)
        or not answer["choices"]
        or not isinstance(answer["choices"][0], dict)
    ):
        return None
    answer["id"], answer["created"] = _fresh_ids(endpoint)
    return answer


def usage_counts(answer: dict[str, Any]) -> tuple[int | None, int | None]:
    usage = answer.get("usage")
    if not isinstance(usage, dict):
        return None, None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) else None,
        completion if isinstance(completion, int) else None,
    )


def _event(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def sse_replay(answer: dict[str, Any], *, include_usage: bool) -> bytes:
    """A complete answer as the SSE events of a stream that says the same."""
    head: dict[str, Any] = {"id": answer.get("id"), "object": CHUNK_OBJECTS[answer["object"]]}
    for key in ("created", "model", "system_fingerprint"):
        if key in answer:
            head[key] = answer[key]
    choice = answer["choices"][0]
    finish = choice.get("finish_reason") or "stop"

    def chunk(choice: dict[str, Any]) -> bytes:
        body: dict[str, Any] = {**head, "choices": [choice]}
        if include_usage:
            body["usage"] = None  # on every chunk but the last, as OpenAI sends it
        return _event(body)

    events = []
    if answer["object"] == "chat.completion":
        message = choice.get("message") or {}

        def delta(fields: dict[str, Any], reason: str | None = None) -> bytes:
            return chunk({"index": 0, "delta": fields, "logprobs": None, "finish_reason": reason})

        events.append(delta({"role": "assistant", "content": ""}))
        if message.get("reasoning_content"):
            events.append(delta({"reasoning_content": message["reasoning_content"]}))
        if message.get("content"):
            events.append(delta({"content": message["content"]}))
        calls = message.get("tool_calls")
        if isinstance(calls, list) and calls:
            indexed = [{"index": i, **c} for i, c in enumerate(calls) if isinstance(c, dict)]
            events.append(delta({"tool_calls": indexed}))
        events.append(delta({}, finish))
    else:
        if choice.get("text"):
            events.append(
                chunk({"text": choice["text"], "index": 0, "logprobs": None, "finish_reason": None})
            )
        events.append(chunk({"text": "", "index": 0, "logprobs": None, "finish_reason": finish}))
    if include_usage:
        usage = answer.get("usage")
        if not isinstance(usage, dict):
            usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        events.append(_event({**head, "choices": [], "usage": usage}))
    events.append(_DONE)
    return b"".join(events)


def unavailable(model: str, retry_after_s: float) -> GatewayError:
    """Tier 3 without a static answer for the model: 503, with when to try again."""
    seconds = min(max(1, math.ceil(retry_after_s)), MAX_RETRY_AFTER_S)
    return GatewayError(
        503,
        f"`{model}` is unavailable: the cluster is failing too many requests (degradation "
        f"tier 3). Please try again in {seconds} s.",
        "server_error",
        "service_unavailable",
        None,
        {"retry-after": str(seconds), "x-clawdbot-degraded": "unavailable"},
    )
