"""The response cache: which requests are the same (pure), and storing, fetching and evicting
against the real Redis."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from django.conf import settings

from clawdbot_site import redis_keys
from gateway.response_cache import ENTRY_OVERHEAD, ResponseCache, digest, no_store, worth_storing
from gateway.tiers import Tier
from wire.resp import RespClient

BODY: dict[str, Any] = {
    "model": "qwen3-32b",
    "messages": [{"role": "user", "content": "Hello"}],
    "temperature": 0.2,
    "max_tokens": 64,
}


def key(body: dict[str, Any] | None = None, **parts: Any) -> str:
    return digest(
        profile=parts.get("profile", "qwen3-32b"),
        endpoint=parts.get("endpoint", "chat"),
        body=BODY if body is None else body,
        key_id=parts.get("key_id", "7"),
    )


def test_identical_requests_have_one_key_whatever_the_field_order_or_delivery() -> None:
    reordered = dict(reversed(list(BODY.items())))
    streamed = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    nulls = {**BODY, "seed": None, "top_p": None}
    other_name = {**BODY, "model": "an-alias"}  # the served profile is what counts
    assert key() == key(reordered) == key(streamed) == key(nulls) == key(other_name)


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.3},
        {"max_tokens": 65},
        {"seed": 1},
        {"stop": ["\n"]},
        {"messages": [{"role": "user", "content": "Hello!"}]},
        {"messages": [{"role": "system", "content": "Hello"}]},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"response_format": {"type": "json_object"}},
    ],
)
def test_any_other_content_or_sampling_parameter_is_another_request(
    change: dict[str, Any],
) -> None:
    assert key({**BODY, **change}) != key()


def test_the_key_profile_and_endpoint_are_part_of_it() -> None:
    assert key(key_id="8") != key()
    assert key(key_id=None) != key()  # shared entries never mix with a key's own
    assert key(key_id=None) == key({**BODY}, key_id=None)
    assert key(profile="qwen2-7b") != key()
    assert key(endpoint="completions") != key()


def test_no_store_is_read_from_any_cache_control_header() -> None:
    assert no_store([b"no-store"])
    assert no_store([b"max-age=0, No-Store"])
    assert no_store([b"no-cache", b"no-store"])
    assert not no_store([])
    assert not no_store([b"no-cache, max-age=0"])
    assert not no_store([b"no-storey"])


def test_answers_are_stored_only_while_they_can_be_asked_for_soon() -> None:
    assert not worth_storing(Tier.NORMAL, 0.0, warm_at=0.01)
    assert not worth_storing(Tier.NORMAL, 0.009, warm_at=0.01)
    assert worth_storing(Tier.NORMAL, 0.01, warm_at=0.01)
    assert worth_storing(Tier.CACHE, 0.0, warm_at=0.01)  # still in tier 1 as the rate falls
    assert worth_storing(Tier.NORMAL, 0.0, warm_at=0.0)  # warm-up 0: always


# --- against Redis --------------------------------------------------------------------------


@pytest.fixture
async def resp(redis_client: redis.Redis) -> AsyncIterator[RespClient]:
    client = RespClient(settings.REDIS_URL)
    yield client
    client.close()


def answer(size: int) -> bytes:
    return b"x" * size


async def test_a_stored_answer_is_fetched_by_its_key_and_lapses_after_the_ttl(
    resp: RespClient, redis_client: redis.Redis
) -> None:
    cache = ResponseCache(resp, ttl_s=60, max_bytes=10_000, max_entry_bytes=1_000)
    assert await cache.store("a", b'{"object":"chat.completion"}')
    assert await cache.fetch("a") == b'{"object":"chat.completion"}'
    assert await cache.fetch("b") is None
    assert 59_000 < redis_client.pttl(redis_keys.cache_entry("a")) <= 60_000


async def test_the_budget_evicts_the_oldest_answers_first(
    resp: RespClient, redis_client: redis.Redis
) -> None:
    size = 1_000
    cache = ResponseCache(
        resp, ttl_s=60, max_bytes=3 * (size + ENTRY_OVERHEAD), max_entry_bytes=size
    )
    for name in ("third", "first", "second"):
        assert await cache.store(name, answer(size))
    # Stored a second apart, as far as the index knows (within one millisecond they tie).
    now = int(time.time() * 1000)
    index = f"{redis_keys.PREFIX}{redis_keys.CACHE_INDEX_PART}"
    redis_client.zadd(index, {"first": now - 3000, "second": now - 2000, "third": now - 1000})
    assert int(redis_client.get(redis_keys.CACHE_BYTES) or 0) == 3 * (size + ENTRY_OVERHEAD)
    assert await cache.store("fourth", answer(size))
    assert await cache.fetch("first") is None  # evicted
    assert [await cache.fetch(n) for n in ("second", "third", "fourth")] == [answer(size)] * 3
    assert int(redis_client.get(redis_keys.CACHE_BYTES) or 0) == 3 * (size + ENTRY_OVERHEAD)
    # Storing the same request again replaces its entry, counted once.
    assert await cache.store("second", answer(size // 2))
    assert await cache.fetch("third") == answer(size)
    assert int(redis_client.get(redis_keys.CACHE_BYTES) or 0) == (
        2 * (size + ENTRY_OVERHEAD) + size // 2 + ENTRY_OVERHEAD
    )


async def test_an_answer_over_the_entry_cap_or_the_budget_is_not_stored(
    resp: RespClient,
) -> None:
    cache = ResponseCache(resp, ttl_s=60, max_bytes=100_000, max_entry_bytes=500)
    assert not await cache.store("big", answer(501))
    assert await cache.fetch("big") is None
    tiny = ResponseCache(resp, ttl_s=60, max_bytes=600, max_entry_bytes=500)
    assert await tiny.store("small", answer(100))
    assert not await tiny.store("medium", answer(450))  # over the whole budget on its own
    assert await tiny.fetch("medium") is None
    assert await tiny.fetch("small") == answer(100), "nothing was evicted for it"
    off = ResponseCache(resp, ttl_s=60, max_bytes=0, max_entry_bytes=500)
    assert not await off.store("any", answer(1))


async def test_expired_entries_leave_the_budget(
    resp: RespClient, redis_client: redis.Redis
) -> None:
    short = ResponseCache(resp, ttl_s=1, max_bytes=100_000, max_entry_bytes=1_000)
    assert await short.store("old", answer(100))
    # An hour later, as far as the index knows: the next store forgets it.
    redis_client.zadd(f"{redis_keys.PREFIX}{redis_keys.CACHE_INDEX_PART}", {"old": 0})
    assert await short.store("new", answer(100))
    assert int(redis_client.get(redis_keys.CACHE_BYTES) or 0) == 100 + ENTRY_OVERHEAD
    assert not redis_client.exists(redis_keys.cache_entry("old"))
