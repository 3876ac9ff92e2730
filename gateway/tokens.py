"""Cheap prompt-size estimates, run on every request before it is routed.

The gateway cannot run each node's tokenizer, so it estimates. The heuristic is the simulator's
(``simulator/engine.py``) made never smaller, so a prompt the gateway admits is one the
simulated node will not truncate, and real tokenizers are rarely under-estimated:

* text: ``ceil(utf8_bytes / 4)``. For ASCII that is the simulator's ``ceil(chars / 4)``
  exactly; for other scripts it counts UTF-8 bytes instead of code points, because real
  tokenizers spend far more tokens per character on, say, Chinese or emoji (about one token
  per 1-1.5 CJK characters) than on English.
* chat: per message ``4 + text(content) + 256 per image + text(tool call name + arguments)``,
  text parts counted joined with ``"\\n"`` (as the Ollama translation sends them) or one by
  one (as an OpenAI-compatible node gets them), whichever is larger, plus
  ``text(json(tools))`` and ``3`` for the assistant header the chat template opens for the reply.

Keep ``IMAGE_TOKENS``, ``MESSAGE_OVERHEAD_TOKENS`` and ``CHARS_PER_TOKEN`` equal to the
simulator's; the tests check that the estimate is never below it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4
IMAGE_TOKENS = 256
# Chat templates end the prompt with the assistant's header (e.g. `<|im_start|>assistant\n`).
REPLY_PRIMER_TOKENS = 3
# Text parts of one message are sent joined by this (gateway/upstreams/ollama.py uses it too).
PART_SEPARATOR = "\n"


def _utf8_len(text: str) -> int:
    # isascii() is a flag check on CPython strings, so the common case costs no copy.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def estimate_text_tokens(text: str) -> int:
    return -(-_utf8_len(text) // CHARS_PER_TOKEN)


def estimate_texts_tokens(texts: str | Iterable[str]) -> int:
    """Tokens of a prompt or embedding input that may be one string or several."""
    if isinstance(texts, str):
        return estimate_text_tokens(texts)
    return sum(estimate_text_tokens(text) for text in texts)


def _content_tokens(content: object) -> int:
    if isinstance(content, str):
        return estimate_text_tokens(content)
    if not isinstance(content, list):
        return 0
    text_bytes = 0
    text_parts = 0
    per_part = 0
    images = 0
    for part in content:
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind == "image_url":
            images += 1
            continue
        text = part.get(kind) if kind in ("text", "refusal") else None
        if isinstance(text, str):
            size = _utf8_len(text)
            text_bytes += size
            text_parts += 1
            per_part += -(-size // CHARS_PER_TOKEN)
    # An Ollama node sees the parts joined (separators included); an OpenAI-compatible one sees
    # them apart, which the simulator counts part by part. Take whichever is larger.
    joined = -(-(text_bytes + max(text_parts - 1, 0) * len(PART_SEPARATOR)) // CHARS_PER_TOKEN)
    return max(joined, per_part) + IMAGE_TOKENS * images


def _tool_call_tokens(tool_calls: object) -> int:
    if not isinstance(tool_calls, list):
        return 0
    total = 0
    for call in tool_calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping):
            continue
        name = function.get("name")
        arguments = function.get("arguments")
        size = _utf8_len(name) if isinstance(name, str) else 0
        if isinstance(arguments, str):
            size += _utf8_len(arguments)
        elif arguments is not None:
            size += len(orjson.dumps(arguments))
        total += -(-size // CHARS_PER_TOKEN)
    return total


def estimate_message_tokens(message: Mapping[str, Any]) -> int:
    """One chat message's share of the prompt."""
    return (
        MESSAGE_OVERHEAD_TOKENS
        + _content_tokens(message.get("content"))
        + _tool_call_tokens(message.get("tool_calls"))
    )


def estimate_tools_tokens(tools: Sequence[Any] | None) -> int:
    # orjson returns UTF-8 bytes, so len() is already the byte count.
    return -(-len(orjson.dumps(tools)) // CHARS_PER_TOKEN) if tools else 0


def estimate_chat_prompt_tokens(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None = None
) -> int:
    """Prompt tokens of OpenAI-shaped chat messages plus tool definitions."""
    total = REPLY_PRIMER_TOKENS + estimate_tools_tokens(tools)
    for message in messages:
        total += estimate_message_tokens(message)
    return total


def estimate_completion_prompt_tokens(
    prompt: str | Iterable[str], suffix: str | None = None
) -> int:
    """Prompt tokens of a text completion (``/v1/completions``)."""
    return estimate_texts_tokens(prompt) + (estimate_text_tokens(suffix) if suffix else 0)
