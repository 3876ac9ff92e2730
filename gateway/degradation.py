"""This process's part in the degradation tiers. Requests are counted in memory as they end
(no Redis call per request); once a second `tick` adds the counts to the cluster's
per-second buckets in Redis and reads back the whole window and the shared tier, in one
script call. `tiers.select_tier` chooses the tier; a change is written with a
compare-and-set (CHANGE), so when several processes propose a change at once exactly one
wins, and only the winner records it (a TierChange row, an alert, a log line: see
`runtime`).

Which requests count, and as what, is `node_faults.cluster_failed`."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from clawdbot_site import redis_keys
from gateway.response_cache import worth_storing
from gateway.tiers import Tier, TierPolicy, Window, select_tier
from wire.resp import RespClient

TICK_S = 1.0

# Add this process's counts to the current second's bucket, then read the window (the last
# `window` seconds' buckets, this one included) and the tier with the time it began.
TICK = r"""
local p = KEYS[1]
local now_s = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local requests = tonumber(ARGV[3])
local failures = tonumber(ARGV[4])
if requests > 0 then
  local bucket = p .. 'tier:w:' .. now_s
  redis.call('HINCRBY', bucket, 'r', requests)
  if failures > 0 then redis.call('HINCRBY', bucket, 'f', failures) end
  redis.call('EXPIRE', bucket, window + 5)
end
local r, f = 0, 0
for s = now_s - window + 1, now_s do
  local counts = redis.call('HMGET', p .. 'tier:w:' .. s, 'r', 'f')
  r = r + (tonumber(counts[1]) or 0)
  f = f + (tonumber(counts[2]) or 0)
end
local state = redis.call('HMGET', p .. 'tier', 'tier', 'since')
redis.call('HSET', p .. 'tier', 'requests', r, 'failures', f)
return {r, f, tonumber(state[1]) or 0, tonumber(state[2]) or 0}
"""
TICK_SHA = hashlib.sha1(TICK.encode(), usedforsecurity=False).hexdigest()

# Move the tier from what the caller read (tier and since) to a new one; 0 when another
# process moved it first.
CHANGE = r"""
local p = KEYS[1]
local state = redis.call('HMGET', p .. 'tier', 'tier', 'since')
if (tonumber(state[1]) or 0) ~= tonumber(ARGV[1]) or (tonumber(state[2]) or 0) ~= tonumber(ARGV[2])
then
  return 0
end
redis.call('HSET', p .. 'tier', 'tier', ARGV[3], 'since', ARGV[4])
return 1
"""
CHANGE_SHA = hashlib.sha1(CHANGE.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class Change:
    before: Tier
    after: Tier
    window: Window
    at: float  # unix seconds


def _tier(value: int) -> Tier:
    return Tier(min(max(value, Tier.NORMAL), Tier.STATIC))


class Degradation:
    """The tier this process acts on, as of its last tick, and its counts since then."""

    def __init__(
        self,
        resp: RespClient,
        policy: TierPolicy,
        *,
        window_s: int,
        warm_at: float,
        enabled: bool = True,
    ) -> None:
        self._resp = resp
        self.policy = policy
        self.window_s = window_s
        self.warm_at = warm_at
        self.tier = Tier.NORMAL
        self.window = Window(0, 0)
        # Whether finished answers are worth storing for tier 1 (response_cache.worth_storing);
        # never with the tiers off (CLAWDBOT_TIER_ENABLED), when no tier would read them.
        self.warm = enabled and worth_storing(self.tier, 0.0, warm_at)
        self._requests = 0
        self._failures = 0

    def count(self, failed: bool) -> None:
        """One request the cluster answered (False) or failed (True)."""
        self._requests += 1
        if failed:
            self._failures += 1

    async def tick(self, now: float | None = None) -> Change | None:
        """Push the counts, read the window and the tier, and move the tier if the window
        says so; the Change when this process made one."""
        now = time.time() if now is None else now
        requests, failures = self._requests, self._failures
        self._requests = self._failures = 0
        args = [int(now), self.window_s, requests, failures]
        try:
            reply = await self._resp.evalsha(TICK_SHA, TICK, [redis_keys.PREFIX], args)
        except BaseException:
            self._requests += requests  # kept for the next tick
            self._failures += failures
            raise
        window = Window(int(reply[0]), int(reply[1]))
        current, since_ms = _tier(int(reply[2])), int(reply[3])
        self.window = window
        chosen = select_tier(current, window, now - since_ms / 1000, self.policy)
        change = None
        if chosen != current:
            args = [int(current), since_ms, int(chosen), int(now * 1000)]
            if await self._resp.evalsha(CHANGE_SHA, CHANGE, [redis_keys.PREFIX], args):
                change = Change(current, chosen, window, now)
                current = chosen
            # else another process moved it first: the next tick reads where it went.
        self.tier = current
        self.warm = worth_storing(current, window.rate, self.warm_at)
        return change
