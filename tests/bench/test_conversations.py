"""The multi-turn benchmark's pure pieces: conversations, sticky placement, hit ratios."""

from __future__ import annotations

import itertools

import pytest

from bench.conversations import (
    FIRST_MESSAGE_TOKENS,
    FOLLOW_UPS,
    conversations,
    hit_ratio,
    start_offsets,
    sticky_node,
)


def test_conversations_are_the_same_for_a_seed_and_differ_between_users() -> None:
    first = list(itertools.islice(conversations(1, seed=5), 3))
    assert first == list(itertools.islice(conversations(1, seed=5), 3))
    other = next(conversations(2, seed=5))
    assert other.turns[0].content != first[0].turns[0].content
    assert len({c.key for c in first}) == 3
    for conversation in first:
        opening, *follow_ups = conversation.turns
        assert len(opening.content) == FIRST_MESSAGE_TOKENS * 4
        assert opening.think_s == 0 and len(follow_ups) == FOLLOW_UPS
        assert all(t.think_s > 0 and len(t.content) < 1000 for t in follow_ups)


def test_users_start_spread_over_the_ramp() -> None:
    offsets = start_offsets(40, 10.0, seed=1)
    assert offsets == start_offsets(40, 10.0, seed=1)
    assert all(0 <= o <= 10 for o in offsets) and max(offsets) - min(offsets) > 5


def test_sticky_places_by_live_conversations_for_speed() -> None:
    factors = [1.0, 2.2, 3.8]
    assert sticky_node([0, 0, 0], factors) == 2
    assert sticky_node([0, 1, 3], factors) == 1  # 2/2.2 < 4/3.8 < 1/1.0
    assert sticky_node([0, 2, 4], factors) == 0


def test_hit_ratio_is_over_the_run_only() -> None:
    before = [{"query_tokens": 100, "hit_tokens": 0, "queries": 1, "hits": 0}] * 2
    after = [
        {"query_tokens": 1100, "hit_tokens": 800, "queries": 5, "hits": 4},
        {"query_tokens": 100, "hit_tokens": 0, "queries": 1, "hits": 0},
    ]
    assert hit_ratio(before, after) == (pytest.approx(0.8), pytest.approx(1.0))
    assert hit_ratio(before, before) == (0.0, 0.0)
