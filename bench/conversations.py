"""Pure pieces of the multi-turn benchmark (#16): the conversations each simulated user holds,
the perfectly sticky reference's placement, and the cache hit ratio from the simulators'
counters. No I/O and no clock (tests/bench/test_conversations.py)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from simulator.engine import CHARS_PER_TOKEN

# One system prompt for every conversation (about 300 tokens), as an application sends.
SYSTEM_PROMPT = (
    "You are a senior engineer helping a colleague debug code and answer questions about long "
    "documents. Quote the lines you refer to, say what you would change and why, and keep "
    "answers short unless asked for detail. "
) * 6
FIRST_MESSAGE_TOKENS = 4000
FOLLOW_UP_TOKENS = (40, 160)
ANSWER_CHOICES = (32, 64, 128)
ANSWER_WEIGHTS = (0.3, 0.4, 0.3)
FOLLOW_UPS = 4
THINK_MEAN_S = 4.0
THINK_MAX_S = 15.0
_WORDS = (
    "parser", "buffer", "handle", "socket", "retry", "index", "cache", "thread", "lock",
    "queue", "timeout", "token", "stream", "header", "commit", "branch", "schema", "query",
    "worker", "signal", "value", "error", "trace", "frame", "module", "import", "return",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Turn:
    """One user message and how long the answer may be; ``think_s`` is the pause before it."""

    content: str
    max_tokens: int
    think_s: float


@dataclass(frozen=True, slots=True)
class Conversation:
    key: str
    turns: tuple[Turn, ...]


def _text(rng: random.Random, tokens: int, head: str) -> str:
    chars = tokens * CHARS_PER_TOKEN
    words = [head]
    length = len(head)
    while length < chars:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:chars]


def conversations(user: int, seed: int) -> Iterator[Conversation]:
    """The endless series of conversations of one user, the same for a given seed: a long
    first message (a document or a stack of code), then follow-ups after some thought."""
    rng = random.Random(seed * 100_003 + user)
    number = 0
    while True:
        key = f"u{user}-c{number}"
        turns = [
            Turn(
                _text(rng, FIRST_MESSAGE_TOKENS, f"Conversation {key}: please read this."),
                rng.choices(ANSWER_CHOICES, ANSWER_WEIGHTS)[0],
                0.0,
            )
        ]
        for _ in range(FOLLOW_UPS):
            turns.append(
                Turn(
                    _text(rng, rng.randint(*FOLLOW_UP_TOKENS), "Follow-up:"),
                    rng.choices(ANSWER_CHOICES, ANSWER_WEIGHTS)[0],
                    min(rng.expovariate(1 / THINK_MEAN_S), THINK_MAX_S),
                )
            )
        yield Conversation(key, tuple(turns))
        number += 1


def start_offsets(users: int, ramp_s: float, seed: int) -> list[float]:
    """When each user starts, spread over ``ramp_s`` so first turns do not all land at once."""
    rng = random.Random(seed)
    return [rng.uniform(0.0, ramp_s) for _ in range(users)]


def sticky_node(conversations_on: Sequence[int], factors: Sequence[float]) -> int:
    """Where the sticky reference places a new conversation: the node with the fewest live
    conversations for its speed (least loaded), where it then stays to its end."""
    return min(range(len(factors)), key=lambda i: ((conversations_on[i] + 1) / factors[i], i))


def hit_ratio(
    before: Sequence[Mapping[str, int]], after: Sequence[Mapping[str, int]]
) -> tuple[float, float]:
    """(token, request) hit ratios of the prefix caches between two readings of every node's
    ``/_sim/stats`` ``prefix_cache`` counters."""

    def delta(name: str) -> int:
        return sum(a[name] - b[name] for a, b in zip(after, before, strict=True))

    tokens, queries = delta("query_tokens"), delta("queries")
    return (
        delta("hit_tokens") / tokens if tokens else 0.0,
        delta("hits") / queries if queries else 0.0,
    )
