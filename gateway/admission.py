"""Admission, shared by every gateway process through Redis: per-key rate limits, the choice
of node (least expected wait among nodes with a free slot), per-node concurrency slots held as
leases with a TTL, a bounded per-node queue, and passive ejection of failing nodes.

One script call admits a request (one round trip); one call releases it. Leases expire, so a
killed gateway process leaks no slot: its leases lapse within LEASE_TTL_MS.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aredis

from clawdbot_site import redis_keys
from gateway.leases import Lease
from gateway.node_faults import Outcome
from gateway.snapshot import Route
from wire.resp import RespClient

LEASE_TTL_MS = 30_000
# A place in a queue is refreshed by its request's every poll (at most 250 ms apart), not by
# the lease renewal: it lapses this soon after its process dies, so a dead process's places
# cannot hold back the slots they would have had first claim on.
QUEUE_TTL_MS = 3_000

ADMIT = r"""
local p = KEYS[1]
local now = tonumber(ARGV[1])
local lease = ARGV[2]
local ttl = tonumber(ARGV[3])
local keyid = ARGV[4]
local rpm = tonumber(ARGV[5])
local tpm = tonumber(ARGV[6])
local est = tonumber(ARGV[7])
local check_rate = ARGV[8] == '1'
local queued_at = ARGV[9]
local allow_queue = ARGV[10] == '1'
local prefer = ARGV[11]
local qttl = tonumber(ARGV[12])
local first = 13
local minute = math.floor(now / 60000)
local into = now % 60000
local frac = into / 60000
local rem_r, rem_t = -1, -1

local function window(kind, limit, cost)
  local base = p .. 'rl:' .. kind .. ':' .. keyid .. ':'
  local both = redis.call('MGET', base .. minute, base .. (minute - 1))
  local cur, prev = tonumber(both[1]) or 0, tonumber(both[2]) or 0
  local used = prev * (1 - frac) + cur
  if used + cost <= limit then
    return -1, math.floor(limit - used - cost)
  end
  -- When will the sliding window have room again?
  local wait
  if cur + cost <= limit and prev > 0 then
    local need = 1 - (limit - cur - cost) / prev
    wait = math.max(1, math.ceil((need - frac) * 60000))
  elseif cost > limit then
    wait = -2
  else
    local need = 0
    if cur > 0 then need = math.max(0, 1 - (limit - cost) / cur) end
    wait = math.ceil((60000 - into) + need * 60000)
  end
  return wait, 0
end

if check_rate then
  if rpm > 0 then
    local wait, left = window('r', rpm, 1)
    if wait ~= -1 then return {'rate_requests', '', tostring(wait), '0', '0'} end
    rem_r = left
  end
  if tpm > 0 then
    local wait, left = window('t', tpm, est)
    if wait ~= -1 then return {'rate_tokens', '', tostring(wait), tostring(rem_r), '0'} end
    rem_t = left
  end
end

-- The queue of a node is two sorted sets: 'queue:' scored by expiry (a lease like a slot's,
-- so a killed process's place lapses) and 'qorder:' scored by arrival, for first come,
-- first served. Dead places leave both.
local function waiting_on(node)
  local qk = p .. 'queue:' .. node
  if redis.call('ZCARD', qk) == 0 then return 0 end
  local dead = redis.call('ZRANGEBYSCORE', qk, '-inf', now, 'LIMIT', 0, 1000)
  if #dead > 0 then
    redis.call('ZREM', qk, unpack(dead))
    redis.call('ZREM', p .. 'qorder:' .. node, unpack(dead))
  end
  return redis.call('ZCARD', qk)
end

local best, best_score, best_pref = nil, nil, false
local qbest, qbest_score, qbest_pref = nil, nil, false
local alive = 0
local n = math.floor((#ARGV - first + 1) / 5)
for i = 0, n - 1 do
  local b = first + i * 5
  local node = ARGV[b]
  local maxc = tonumber(ARGV[b + 1])
  local qsize = tonumber(ARGV[b + 2])
  local w = tonumber(ARGV[b + 3])
  local gpu = ARGV[b + 4]
  local ejected = tonumber(redis.call('HGET', p .. 'eject:' .. node, 'until') or '0')
  if ejected <= now then
    alive = alive + 1
    local sk = p .. 'slots:' .. node
    redis.call('ZREMRANGEBYSCORE', sk, '-inf', now)
    local inflight = redis.call('ZCARD', sk)
    local waiting = waiting_on(node)
    -- Requests queued here have the first claim on its free slots: a newcomer gets one only
    -- when there are more free slots than waiting requests, a queued one by its place.
    local ahead = waiting
    if node == queued_at then
      ahead = redis.call('ZRANK', p .. 'qorder:' .. node, lease) or waiting
    end
    if inflight + ahead < maxc then
      local score = (inflight + ahead + 1) / w
      local pref = prefer ~= '' and gpu == prefer
      if best == nil or (pref and not best_pref) or (pref == best_pref and score < best_score) then
        best, best_score, best_pref = node, score, pref
      end
    elseif allow_queue and queued_at == '' and qsize > 0 then
      if waiting < qsize then
        local score = (inflight + waiting + 1) / w
        local pref = prefer ~= '' and gpu == prefer
        if qbest == nil or (pref and not qbest_pref)
            or (pref == qbest_pref and score < qbest_score) then
          qbest, qbest_score, qbest_pref = node, score, pref
        end
      end
    end
  end
end

local verdict, chosen
if best ~= nil then
  redis.call('ZADD', p .. 'slots:' .. best, now + ttl, lease)
  if queued_at ~= '' then
    redis.call('ZREM', p .. 'queue:' .. queued_at, lease)
    redis.call('ZREM', p .. 'qorder:' .. queued_at, lease)
    if best ~= queued_at and redis.call('ZCARD', p .. 'queue:' .. queued_at) > 0 then
      redis.pcall('PUBLISH', p .. 'freed:' .. queued_at, '')  -- those behind it move up
    end
  end
  verdict, chosen = 'ok', best
elseif queued_at ~= '' then
  -- Still waiting: extend the place (and take a new one at the back if it had lapsed).
  redis.call('ZADD', p .. 'queue:' .. queued_at, now + qttl, lease)
  redis.call('ZADD', p .. 'qorder:' .. queued_at, 'NX', now, lease)
  return {'queued', queued_at, '0', tostring(rem_r), tostring(rem_t)}
elseif qbest ~= nil then
  redis.call('ZADD', p .. 'queue:' .. qbest, now + qttl, lease)
  redis.call('ZADD', p .. 'qorder:' .. qbest, now, lease)
  verdict, chosen = 'queued', qbest
elseif alive == 0 then
  return {'ejected', '', '0', '0', '0'}
else
  return {'full', '', '0', '0', '0'}
end

-- A minute's counter gets its expiry when the first increment creates it, not on every
-- request: a script's every redis.call costs about as much again as the command itself.
if check_rate then
  if rpm > 0 then
    local k = p .. 'rl:r:' .. keyid .. ':' .. minute
    if redis.call('INCR', k) == 1 then redis.call('PEXPIRE', k, 130000) end
  end
  if tpm > 0 and est > 0 then
    local k = p .. 'rl:t:' .. keyid .. ':' .. minute
    if redis.call('INCRBY', k, est) == est then redis.call('PEXPIRE', k, 130000) end
  end
end
return {verdict, chosen, '0', tostring(rem_r), tostring(rem_t)}
"""

# Releasing a request's lease, feeding passive ejection, and recording its metrics and log
# entry: everything a finished request writes, in one script call (one round trip, and one
# command for redis-py to encode instead of a dozen).
RELEASE = r"""
local p = KEYS[1]
local now = tonumber(ARGV[1])
local lease = ARGV[2]
local node = ARGV[3]
local outcome = ARGV[4]
local eject_after = tonumber(ARGV[5])
local base = tonumber(ARGV[6])
local cap = tonumber(ARGV[7])
local keyid = ARGV[8]
local token_delta = tonumber(ARGV[9])
local queued = ARGV[10] == '1'
local cooldown = 0
if lease ~= '' then
  if queued then
    redis.call('ZREM', p .. 'queue:' .. node, lease)
    redis.call('ZREM', p .. 'qorder:' .. node, lease)
  else
    redis.call('ZREM', p .. 'slots:' .. node, lease)
  end
  -- Requests wait in this node's queue: the next one can move (gateway.queue_signals).
  -- pcall: a Redis user without the channel permission loses wake-ups, not the release.
  if redis.call('ZCARD', p .. 'queue:' .. node) > 0 then
    redis.pcall('PUBLISH', p .. 'freed:' .. node, '')
  end
  local ek = p .. 'eject:' .. node
  if outcome == 'ok' then
    -- A success ends the run of failures but not the memory of past ejections: a node that
    -- keeps failing again gets longer cooldowns until it stays quiet for the key's hour.
    if redis.call('EXISTS', ek) == 1 then redis.call('HSET', ek, 'fails', 0) end
  elseif outcome == 'fail'
      and tonumber(redis.call('HGET', ek, 'until') or '0') <= now then
    -- (A request admitted before the node was ejected, failing with it since, adds nothing:
    -- a node dying under load is one ejection, not one per CLAWDBOT_EJECT_AFTER of them.)
    local fails = redis.call('HINCRBY', ek, 'fails', 1)
    redis.call('PEXPIRE', ek, 3600000)
    if fails >= eject_after then
      local count = redis.call('HINCRBY', ek, 'count', 1)
      cooldown = math.min(base * 2 ^ (count - 1), cap)
      redis.call('HSET', ek, 'until', now + cooldown, 'fails', 0)
    end
  end
end
if token_delta ~= 0 and keyid ~= '' then
  local k = p .. 'rl:t:' .. keyid .. ':' .. math.floor(now / 60000)
  if redis.call('INCRBY', k, token_delta) == token_delta then  -- created: see ADMIT
    redis.call('PEXPIRE', k, 130000)
  end
end
-- ARGV[11..]: metrics and the log entry (absent for a release between retry attempts).
if #ARGV > 10 then
  local model, label = ARGV[11], ARGV[12]
  redis.call('HINCRBY', p .. 'm:requests', label, 1)
  redis.call('SADD', p .. 'm:models', model)
  if ARGV[13] ~= '' then
    redis.call('HINCRBY', p .. 'm:duration:' .. model, ARGV[13], 1)
    redis.call('HINCRBYFLOAT', p .. 'm:duration:' .. model, 'sum', ARGV[14])
  end
  if ARGV[15] ~= '' then
    redis.call('HINCRBY', p .. 'm:ttft:' .. model, ARGV[15], 1)
    redis.call('HINCRBYFLOAT', p .. 'm:ttft:' .. model, 'sum', ARGV[16])
  end
  if ARGV[17] ~= '0' then redis.call('HINCRBY', p .. 'm:tokens', ARGV[19], ARGV[17]) end
  if ARGV[18] ~= '0' then redis.call('HINCRBY', p .. 'm:tokens', ARGV[20], ARGV[18]) end
  redis.call('RPUSH', p .. 'requestlog', ARGV[21])
end
return cooldown
"""

# A lease whose admission reply was never read: out of every slot set and queue it could be in.
FORGET = r"""
local p = KEYS[1]
local lease = ARGV[1]
for i = 2, #ARGV do
  redis.call('ZREM', p .. 'slots:' .. ARGV[i], lease)
  redis.call('ZREM', p .. 'queue:' .. ARGV[i], lease)
  redis.call('ZREM', p .. 'qorder:' .. ARGV[i], lease)
end
return 1
"""

# KEYS: the sorted sets of the leases listed in ARGV after the new expiry, in order.
RENEW = r"""
local expiry = tonumber(ARGV[1])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', expiry, ARGV[i + 1])
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Verdict:
    status: str  # ok | queued | full | ejected | rate_requests | rate_tokens
    node: str
    retry_after_ms: int
    remaining_requests: int  # -1: no limit
    remaining_tokens: int


@dataclass(frozen=True, slots=True)
class EjectionPolicy:
    after_failures: int = 3
    base_cooldown_ms: int = 5_000
    max_cooldown_ms: int = 120_000


class Admission:
    def __init__(
        self, client: aredis.Redis, resp: RespClient, policy: EjectionPolicy | None = None
    ) -> None:
        # The per-request calls (admit, release) go through the lean client; redis-py
        # loads the scripts and renews leases.
        self._resp = resp
        self._admit = client.register_script(ADMIT)
        self._release = client.register_script(RELEASE)
        self._renew = client.register_script(RENEW)
        self._forget = client.register_script(FORGET)
        self.policy = policy or EjectionPolicy()

    async def admit(
        self,
        *,
        lease: str,
        routes: tuple[Route, ...] | list[Route],
        key_id: int | str | None,
        rpm: int | None,
        tpm: int | None,
        estimated_tokens: int,
        check_rate: bool,
        queued_at: str = "",
        allow_queue: bool = True,
        prefer_gpu: str = "",
    ) -> Verdict:
        candidates = list(routes)
        random.shuffle(candidates)  # ties go to a random node
        args: list[Any] = [
            int(time.time() * 1000),
            lease,
            LEASE_TTL_MS,
            key_id or 0,
            rpm or 0,
            tpm or 0,
            estimated_tokens,
            1 if check_rate else 0,
            queued_at,
            1 if allow_queue else 0,
            prefer_gpu,
            QUEUE_TTL_MS,
        ]
        for route in candidates:
            node = route.node
            args += [node.name, node.max_concurrent, node.queue_size, route.weight, node.gpu_type]
        raw = await self._resp.evalsha(self._admit.sha, ADMIT, [redis_keys.PREFIX], args)
        status, node_name, retry, rem_r, rem_t = (
            v.decode() if isinstance(v, bytes) else str(v) for v in raw
        )
        return Verdict(status, node_name, int(retry), int(rem_r), int(rem_t))

    async def load(self) -> None:
        """Load the scripts into Redis now, so pipelines can EVALSHA them."""
        for script in (self._admit, self._release, self._renew, self._forget):
            await script.registered_client.script_load(script.script)

    async def release(
        self,
        lease: Lease | None,
        *,
        outcome: Outcome,
        key_id: int | str | None = None,
        token_delta: int = 0,
        record: list[Any] | None = None,
    ) -> int:
        """Free the slot (or queue place); `outcome` ok|fail|neutral feeds ejection. With
        `record` (metrics and the log entry), also record the finished request: see RELEASE.
        Returns the ejection cooldown in ms when this failure ejected the node, else 0."""
        p = self.policy
        args: list[Any] = [
            int(time.time() * 1000),
            lease.id if lease else "",
            lease.node if lease else "",
            outcome,
            p.after_failures,
            p.base_cooldown_ms,
            p.max_cooldown_ms,
            key_id or "",
            token_delta,
            1 if lease and lease.queued else 0,
        ]
        if record:
            args += record
        return int(await self._resp.evalsha(self._release.sha, RELEASE, [redis_keys.PREFIX], args))

    async def forget(self, lease: str, nodes: list[str]) -> None:
        """Free whatever an admission call for `lease` on `nodes` may have granted."""
        await self._resp.evalsha(self._forget.sha, FORGET, [redis_keys.PREFIX], [lease, *nodes])

    async def renew(self, held: list[Lease]) -> None:
        """Extend the slots still in use. Places in queues are left out: their polls keep them
        (see QUEUE_TTL_MS)."""
        held = [lease for lease in held if not lease.queued]
        if not held:
            return
        expiry = int(time.time() * 1000) + LEASE_TTL_MS
        await self._renew(
            keys=[lease.key for lease in held], args=[expiry, *(lease.id for lease in held)]
        )
