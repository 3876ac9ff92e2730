"""A conversation's prefix identity, for conversation affinity: which earlier prompts this one
extends, so it can go to the node that already holds them in its prefix (KV) cache. Pure.

Turn N+1 of a chat resends turn N's messages, then the answer and a new message. So the
identity of a prompt is a chain of hashes over its messages (each link hashes the one before
and the next message); the node that serves a prompt is remembered under the identity of the
whole prompt (`record`), and a later prompt looks up the identities of its own shorter
prefixes (`lookups`, longest first), each with the tokens a node holding it would not have to
prefill again. No client change is needed; a client may also name its session
(`X-Clawdbot-Session`), which then pins harder than any prefix.

A prefix made of system messages alone is never looked up: many conversations share one
system prompt, and routing on it would send them all to one node (the hot-spotting that
cache-aware routers are known for). Text completions hash the prompt in blocks of
BLOCK_CHARS characters instead, so a longer prompt that starts with an earlier one matches
it at the last whole block they share.

The model (the profile that serves the request) and the tool definitions seed the chain:
another model's cache, or another tool list before the messages, is a different prefix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.tokens import (
    CHARS_PER_TOKEN,
    REPLY_PRIMER_TOKENS,
    estimate_message_tokens,
    estimate_text_tokens,
    estimate_tools_tokens,
)

# How many of a chat's message boundaries, from the end, are looked up: turn N+1 usually
# extends turn N by two messages (the answer, the new question), by more with tool calls.
CHAT_LOOKUPS = 8
BLOCK_CHARS = 512
# Block boundaries looked up for a text completion: the last BLOCK_RECENT one by one, then
# every BLOCK_STRIDE-th further back (a follow-up may append a long answer and question).
BLOCK_RECENT = 8
BLOCK_STRIDE = 8
MAX_LOOKUPS = 16
# A prompt shorter than this is not followed (unless its client names a session): the next
# turn would find at most this many tokens cached, a prefill of a few milliseconds on a
# large GPU and under a tenth of a second on the slowest, less than placing that turn by
# load gains; and following it costs every short request prefix hashing and Redis work.
MIN_TOKENS = 128


@dataclass(frozen=True, slots=True)
class Prefixes:
    record: tuple[str, ...]  # identities the serving node will hold once it has answered
    lookups: tuple[tuple[str, int], ...]  # (identity, tokens cached by its holder), longest first

    @property
    def empty(self) -> bool:
        return not self.record and not self.lookups


NONE = Prefixes((), ())


def worth_following(prompt_tokens: int, session: str) -> bool:
    return bool(session) or prompt_tokens >= MIN_TOKENS


def _seed(model: str, tools: Sequence[Any] | None) -> Any:
    seed = hashlib.blake2b(model.encode("utf-8", "surrogatepass"), digest_size=12)
    if tools:
        seed.update(orjson.dumps(tools, option=orjson.OPT_SORT_KEYS))
    return seed


def _session_id(model: str, session: str) -> str:
    text = f"session\x00{model}\x00{session}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(text, digest_size=12).hexdigest()


def chat(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Any] | None = None,
    session: str = "",
) -> Prefixes:
    chain = _seed(model, tools)
    identities: list[str] = []
    tokens: list[int] = []  # the prompt tokens up to and including message i
    total = REPLY_PRIMER_TOKENS + estimate_tools_tokens(tools)
    first_other = len(messages)  # the first message that is not a system message
    for i, message in enumerate(messages):
        # Sorted keys: the same message is the same link whatever order a client writes it in.
        chain.update(orjson.dumps(message, option=orjson.OPT_SORT_KEYS, default=str))
        chain.update(b"\x1e")
        identities.append(chain.copy().hexdigest())
        total += estimate_message_tokens(message)
        tokens.append(total)
        if first_other == len(messages) and message.get("role") not in ("system", "developer"):
            first_other = i
    if not identities:
        return NONE
    lookups = [
        (identities[i], tokens[i])
        for i in range(
            len(identities) - 1, max(first_other, len(identities) - CHAT_LOOKUPS) - 1, -1
        )
    ]
    record = [identities[-1]]
    if session:
        pinned = _session_id(model, session)
        # The last message is new to every node: the rest is what the session's node holds.
        lookups.insert(0, (pinned, max(total - estimate_message_tokens(messages[-1]), 0)))
        record.append(pinned)
    return Prefixes(tuple(record), tuple(lookups[:MAX_LOOKUPS]))


def completion(model: str, prompt: str | Sequence[str], session: str = "") -> Prefixes:
    """A single text prompt, by blocks; a batch of prompts (a list) goes to one node as one
    request and has no single conversation to follow."""
    if not isinstance(prompt, str):
        return NONE
    blocks = len(prompt) // BLOCK_CHARS
    chain = _seed(model, None)
    identities = []
    for b in range(blocks):
        chain.update(
            prompt[b * BLOCK_CHARS : (b + 1) * BLOCK_CHARS].encode("utf-8", "surrogatepass")
        )
        identities.append(chain.copy().hexdigest())
    record: list[str] = identities[-1:]
    wanted = list(range(blocks - 1, max(blocks - BLOCK_RECENT, 0) - 1, -1))
    wanted += range(blocks - BLOCK_RECENT - BLOCK_STRIDE, -1, -BLOCK_STRIDE)
    lookups = [(identities[b], (b + 1) * BLOCK_CHARS // CHARS_PER_TOKEN) for b in wanted]
    if session:
        pinned = _session_id(model, session)
        lookups.insert(0, (pinned, max(estimate_text_tokens(prompt) - 1, 0)))
        record.append(pinned)
    return Prefixes(tuple(record), tuple(lookups[:MAX_LOOKUPS]))
