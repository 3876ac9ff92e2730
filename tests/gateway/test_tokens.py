from __future__ import annotations

import random
from typing import Any

import pytest

from gateway.tokens import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    REPLY_PRIMER_TOKENS,
    estimate_chat_prompt_tokens,
    estimate_completion_prompt_tokens,
    estimate_text_tokens,
    estimate_texts_tokens,
)
from gateway.upstreams.ollama import chat_to_ollama
from gateway.validation import validate_chat
from simulator import engine as sim_engine


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("x" * 400, 100), ("é", 1), ("日本語", 3)],
)
def test_text_is_a_quarter_of_its_utf8_bytes_rounded_up(text: str, tokens: int) -> None:
    assert estimate_text_tokens(text) == tokens


def test_non_latin_text_counts_higher_than_by_characters() -> None:
    # Tokenizers spend about a token per CJK character; counting code points would say 1/4.
    assert estimate_text_tokens("日本語の文章です" * 10) == 60
    assert estimate_text_tokens("🙂" * 8) == 8


def test_texts_and_completion_prompts() -> None:
    assert estimate_texts_tokens(["abcd", "abcde"]) == 3
    assert estimate_texts_tokens("abcde") == 2
    assert estimate_completion_prompt_tokens("abcd", suffix="abcd") == 2
    assert estimate_completion_prompt_tokens(["abcd", "ab"]) == 2


def test_chat_estimate_is_overhead_plus_content_plus_reply_primer() -> None:
    messages = [{"role": "system", "content": "x" * 40}, {"role": "user", "content": "hi"}]
    expected = REPLY_PRIMER_TOKENS + 2 * MESSAGE_OVERHEAD_TOKENS + 10 + 1
    assert estimate_chat_prompt_tokens(messages) == expected


def test_images_count_a_fixed_amount_each() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 9999}}
    one = [{"role": "user", "content": [{"type": "text", "text": "abcd"}, image]}]
    two = [{"role": "user", "content": [{"type": "text", "text": "abcd"}, image, image]}]
    assert estimate_chat_prompt_tokens(one) == REPLY_PRIMER_TOKENS + 4 + 1 + IMAGE_TOKENS
    assert estimate_chat_prompt_tokens(two) - estimate_chat_prompt_tokens(one) == IMAGE_TOKENS


def test_tools_and_tool_calls_count() -> None:
    base = [{"role": "user", "content": "hi"}]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    assert estimate_chat_prompt_tokens(base, tools) > estimate_chat_prompt_tokens(base)
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c", "function": {"name": "abcd", "arguments": '{"q":"x"}'}}],
    }
    assert estimate_chat_prompt_tokens([call]) == REPLY_PRIMER_TOKENS + 4 + 0 + 4


def _random_text(rng: random.Random) -> str:
    alphabet = 'abc xyz\n{}":,é日🙂'
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))


def _random_conversation(rng: random.Random) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for _ in range(rng.randrange(1, 6)):
        kind = rng.randrange(4)
        if kind == 0:
            messages.append({"role": "user", "content": _random_text(rng)})
        elif kind == 1:
            parts: list[dict[str, Any]] = [
                {"type": "text", "text": _random_text(rng)} for _ in range(rng.randrange(1, 4))
            ]
            if rng.random() < 0.5:
                parts.append(
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}
                )
            messages.append({"role": "user", "content": parts})
        elif kind == 2:
            args = '{"q": "' + _random_text(rng).replace('"', "").replace("\\", "") + '"}'
            args = args.replace("\n", " ")
            messages.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": args},
                        }
                    ],
                }
            )
            messages.append({"role": "tool", "tool_call_id": "c1", "content": _random_text(rng)})
        else:
            messages.append({"role": "developer", "content": _random_text(rng)})
    body: dict[str, Any] = {"model": "m", "messages": messages}
    if rng.random() < 0.3:
        body["tools"] = [{"type": "function", "function": {"name": "f", "description": "日本"}}]
    return body


def test_estimate_is_never_below_the_simulators_count() -> None:
    """A prompt the gateway admits must be one the simulated node would not truncate.

    Checked on both routes: the Ollama-native body the gateway sends, and the OpenAI-shaped
    body an OpenAI-compatible simulated node receives unchanged.
    """
    rng = random.Random(1234)
    for _ in range(500):
        body = _random_conversation(rng)
        req = validate_chat(body)
        ours = estimate_chat_prompt_tokens(req.messages, req.tools)
        native = chat_to_ollama(
            req, upstream_model="m", num_ctx=4096, keep_alive="5m", max_tokens=None
        )
        assert ours >= sim_engine.estimate_chat_tokens(native["messages"], native.get("tools"))
        assert ours >= sim_engine.estimate_chat_tokens(body["messages"], body.get("tools"))


def test_constants_match_the_simulator() -> None:
    assert IMAGE_TOKENS == sim_engine.IMAGE_TOKENS
    assert MESSAGE_OVERHEAD_TOKENS == sim_engine.MESSAGE_OVERHEAD_TOKENS
    for text in ("", "a", "abcd" * 7 + "z"):
        assert estimate_text_tokens(text) == sim_engine.estimate_text_tokens(text)
