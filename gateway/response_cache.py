"""The response cache that degradation tier 1 answers from: successful, non-streamed answers
to chat and text completions, shared by every gateway process through Redis for
CLAWDBOT_CACHE_TTL_S.

Two requests are the same (`digest`) when they were served by the same profile on the same
endpoint, their bodies are equal field for field (messages or prompt, tools, every sampling
parameter, max_tokens...) but for the model name and how the answer is delivered (`stream`,
`stream_options`), and they came with the same key, unless CLAWDBOT_CACHE_SHARED lets keys
share answers. A request sent with `Cache-Control: no-store` is never stored.

Bounded: an answer over CLAWDBOT_CACHE_MAX_ENTRY_BYTES is not stored, and the stored answers
together stay within CLAWDBOT_CACHE_MAX_BYTES, the oldest evicted first (the STORE script).
Storing is off the response path (after the answer went out) and only while it can matter
(`worth_storing`): the normal path pays a comparison, not a Redis write."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson

from clawdbot_site import redis_keys
from gateway.tiers import Tier
from wire.resp import RespClient

# Fields that say how an answer is delivered or which name the client used, not what it is.
DELIVERY_FIELDS = frozenset({"model", "stream", "stream_options"})
ENDPOINTS = frozenset({"chat", "completions"})  # embeddings are not cached
# What an entry costs besides its answer: its digest in three structures and Redis's own
# bookkeeping, roughly; counted so a flood of tiny answers cannot exceed the budget unseen.
ENTRY_OVERHEAD = 160

# Store one answer, first forgetting what expired and then the oldest entries until the
# budget has room. Every entry has the same lifetime, so the oldest is also the next to expire.
STORE = r"""
local p = KEYS[1]
local digest = ARGV[1]
local value = ARGV[2]
local now = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local budget = tonumber(ARGV[5])
local size = tonumber(ARGV[6])
local index = p .. 'answers:index'
local sizes = p .. 'answers:sizes'
local total = p .. 'answers:bytes'
if size > budget then return 0 end  -- it would evict everything and still not fit
local used = tonumber(redis.call('GET', total) or '0')
local function forget(d)
  used = used - tonumber(redis.call('HGET', sizes, d) or '0')
  redis.call('HDEL', sizes, d)
  redis.call('ZREM', index, d)
  redis.call('DEL', p .. 'answers:e:' .. d)
end
for _, d in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', now - ttl, 'LIMIT', 0, 500)) do
  forget(d)
end
if redis.call('HEXISTS', sizes, digest) == 1 then forget(digest) end
while used + size > budget do
  local oldest = redis.call('ZRANGE', index, 0, 0)
  if #oldest == 0 then break end
  forget(oldest[1])
end
used = math.max(used, 0)
local stored = 0
if used + size <= budget then
  redis.call('SET', p .. 'answers:e:' .. digest, value, 'PX', ttl)
  redis.call('ZADD', index, now, digest)
  redis.call('HSET', sizes, digest, size)
  used = used + size
  stored = 1
end
-- The bookkeeping lapses with the last entry when nothing is stored for a whole lifetime.
redis.call('SET', total, used, 'PX', ttl)
redis.call('PEXPIRE', index, ttl)
redis.call('PEXPIRE', sizes, ttl)
return stored
"""
STORE_SHA = hashlib.sha1(STORE.encode(), usedforsecurity=False).hexdigest()


def digest(*, profile: str, endpoint: str, body: dict[str, Any], key_id: str | None) -> str:
    """What identifies a request's answer. `key_id` None: shared by every key. A field sent
    as null is the field left out (as the API treats it)."""
    material = {k: v for k, v in body.items() if k not in DELIVERY_FIELDS and v is not None}
    hasher = hashlib.blake2b(digest_size=20)
    for part in (profile, endpoint, "*" if key_id is None else f"key:{key_id}"):
        hasher.update(part.encode() + b"\x00")
    hasher.update(orjson.dumps(material, option=orjson.OPT_SORT_KEYS))
    return hasher.hexdigest()


def no_store(cache_control: list[bytes]) -> bool:
    """True when the request's Cache-Control headers carry the no-store directive."""
    return any(
        directive.strip().lower() == b"no-store"
        for value in cache_control
        for directive in value.split(b",")
    )


def worth_storing(tier: Tier, rate: float, warm_at: float) -> bool:
    """Store answers only while a cached one can be asked for soon: in a tier already, or
    once the cluster's error rate has reached the warm-up rate (below tier 1's threshold, so
    the cache fills before tier 1 starts reading it)."""
    return tier >= Tier.CACHE or rate >= warm_at


class ResponseCache:
    def __init__(
        self, resp: RespClient, *, ttl_s: float, max_bytes: int, max_entry_bytes: int
    ) -> None:
        self._resp = resp
        self.ttl_ms = int(ttl_s * 1000)
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes

    async def store(self, key: str, answer: bytes) -> bool:
        """Keep `answer` under `key` (a digest); False when it is too large to keep."""
        size = len(answer) + ENTRY_OVERHEAD
        if len(answer) > self.max_entry_bytes or size > self.max_bytes:
            return False
        args = [key, answer, int(time.time() * 1000), self.ttl_ms, self.max_bytes, size]
        stored = await self._resp.evalsha(STORE_SHA, STORE, [redis_keys.PREFIX], args)
        return bool(stored)

    async def fetch(self, key: str) -> bytes | None:
        value = await self._resp.call("GET", redis_keys.cache_entry(key))
        return value if isinstance(value, bytes) else None
