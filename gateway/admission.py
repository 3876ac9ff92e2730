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
from gateway import routing
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

-- Routing facts (gateway.routing_inputs): the request's size, and its prefix identities for
-- conversation affinity (record: what the chosen node will cache; lookups: earlier prefixes
-- of this prompt, longest first, with the tokens a node holding one skips).
local model = ARGV[13]
local prompt = tonumber(ARGV[14])
local output = tonumber(ARGV[15])
local slowdown = tonumber(ARGV[16])
local unit_prior = tonumber(ARGV[17])
local prefill_ratio = tonumber(ARGV[18])
local min_samples = tonumber(ARGV[19])
local tau_prior = tonumber(ARGV[20])
local aff_ttl = tonumber(ARGV[21])
local aff_cap = tonumber(ARGV[22])
local nrec = tonumber(ARGV[23])
local nlook = tonumber(ARGV[24])
-- What the client waits for: a stream's reader sees tokens once the first arrives, so a
-- stream is priced by its time to first token, and its decode only at `pace` of its time.
local pace = tonumber(ARGV[25])
local records = 26  -- ARGV from here: the record identities, then the lookups
local lookups = records + nrec
local first = lookups + nlook * 2

if output < 0 then  -- no max_tokens: the model's usual answer length
  output = tonumber(redis.call('HGET', p .. 'outlen', model) or '256')
end
local affine, cached, matched, affine_flow = nil, 0, nil, nil
if nlook > 0 then
  local keys = {}
  for i = 0, nlook - 1 do keys[i + 1] = p .. 'aff:' .. ARGV[lookups + i * 2] end
  local found = redis.call('MGET', unpack(keys))
  for i = 1, nlook do
    if found[i] then
      -- '<node> <tokens the node had cached in all when it took the prefix>'
      local node_name, flow = string.match(found[i], '^(%S+) ?(%S*)$')
      affine, affine_flow = node_name, tonumber(flow)
      cached = tonumber(ARGV[lookups + (i - 1) * 2 + 1])
      matched = ARGV[lookups + (i - 1) * 2]
      break
    end
  end
end
-- A conversation is placed for the turns still to come too: each node is priced for the
-- later turns as well (what they will wait for a slot there, and the chance the node's cache
-- has dropped the conversation by then), so conversations spread over the nodes' slots and
-- caches by speed, as a sticky placement would, instead of piling onto the fastest node while
-- their users think. A follow-up weighing a move prices the other nodes the same way (it
-- would join their conversations), its own node not (it is counted there already): else
-- each would leave a slower node for the fastest, and the caches would overflow there. A
-- prompt repeated whole is not a conversation.
local spread = nrec > 0 and (affine == nil or matched ~= ARGV[records])
local REBALANCE_MARGIN = 0.25
-- Which conversations are live: nothing says a user has gone, so each counts by the chance
-- that it is live. It has another turn with probability q, learned apart for first turns
-- ('conv1:', which single-turn traffic never continues) and later ones ('conv:'): of such
-- turns, the share a next turn continued rather than left it to end (idle for 5 mean
-- gaps). Its user thinks for an exponential time of mean `gap` (learned: from a turn's
-- expected end to the next turn). So while its turn runs it counts q; idle for t since,
-- q e^(-t/gap) / (q e^(-t/gap) + 1 - q) (Bayes). Counting every conversation seen in the
-- last minute instead counted twice as many as there were, most of them on the fast nodes:
-- new conversations went to the slowest node until it queued.
-- The longest a conversation is kept idle: as long as its prefix is remembered (a next turn
-- after that finds no node to go back to).
local CONVERSATION_IDLE_MS = aff_ttl
-- Until they are seen to continue, first turns are taken for single-turn traffic (placed by
-- their own time alone); a conversation seen past its first turn likely goes on.
local CONTINUE_PRIOR, PRIOR_TURNS, GAP_PRIOR_MS = {0, 0.8}, {1, 4}, 10000
local READ_AT_MOST = 256  -- the most recent conversations read per node and kind
local conv_stats, conv_q, conv_odds = {0, 0, 0, 0}, {}, {}
local conv_gap = GAP_PRIOR_MS
local CONV_KEYS = {p .. 'conv1:', p .. 'conv:'}  -- by kind: in the first turn, past it
if spread then
  local cs = redis.call('HMGET', p .. 'convstats', 'c1', 'e1', 'c2', 'e2', 'gap')
  for k = 1, 4 do conv_stats[k] = tonumber(cs[k]) or 0 end
  conv_gap = math.max(tonumber(cs[5]) or GAP_PRIOR_MS, 100)
  for kind = 1, 2 do
    local continued, ended = conv_stats[kind * 2 - 1], conv_stats[kind * 2]
    local q = (continued + CONTINUE_PRIOR[kind] * PRIOR_TURNS[kind])
      / (continued + ended + PRIOR_TURNS[kind])
    q = math.min(q, 0.98)
    conv_q[kind], conv_odds[kind] = q, q / (1 - q)
  end
end
-- Idle for 5 mean gaps, a conversation has ended: 99.3 % of pauses are shorter.
local conv_ended_ms = math.min(5 * conv_gap, CONVERSATION_IDLE_MS)
local function live_conversations(name)
  local live = 0
  for kind = 1, 2 do
    local key = CONV_KEYS[kind] .. name
    local seen = redis.call('ZREVRANGEBYSCORE', key, '+inf', now - conv_ended_ms,
      'WITHSCORES', 'LIMIT', 0, READ_AT_MOST)
    for j = 2, #seen, 2 do
      local idle = now - tonumber(seen[j])  -- from its latest turn's expected end
      if idle <= 0 then
        live = live + conv_q[kind]
      else
        local odds = conv_odds[kind] * math.exp(-idle / conv_gap)
        live = live + odds / (1 + odds)
      end
    end
  end
  return live
end

-- Each node's speed for this model: decode and prefill tokens per second of one sequence,
-- learned from its answers (RELEASE), blended with the GPU-type prior while samples are few
-- or old. The prior's tokens per score point come from the nodes already learned, so a new
-- node starts in the same units as the rest.
local nodes, by_name = {}, {}
local CACHE_TAU_MS, OCCUPANCY_TAU_MS = 10000, 10000
local n = math.floor((#ARGV - first + 1) / 7)
local sum_d, sum_p, sum_score = 0, 0, 0
local sum_conversations, sum_busy = 0, 0
for i = 0, n - 1 do
  local b = first + i * 7
  local node = {name = ARGV[b], maxc = tonumber(ARGV[b + 1]), qsize = tonumber(ARGV[b + 2]),
    score = tonumber(ARGV[b + 3]), live = tonumber(ARGV[b + 4]), busy = tonumber(ARGV[b + 5]),
    gpu = ARGV[b + 6], trust = 0, d = 0, pf = 0}
  if spread then
    node.conversations = live_conversations(node.name)
    node.busy_now = redis.call('ZCOUNT', p .. 'slots:' .. node.name, now, '+inf')
    sum_conversations = sum_conversations + node.conversations
    sum_busy = sum_busy + node.busy_now
  end
  if nrec > 0 then
    -- Its prefix cache's flow: the tokens it has cached in all, at what rate (per ms, fading
    -- with CACHE_TAU_MS) and, once learned, how many it holds (RELEASE).
    local c = redis.call('HMGET', p .. 'pcache:' .. node.name, 'flow', 'rate', 't', 'cap', 'occ',
      'ot')
    node.cache_flow, node.cache_rate = tonumber(c[1]) or 0, tonumber(c[2]) or 0
    node.occ, node.occ_at = tonumber(c[5]) or 0, tonumber(c[6]) or 0
    if node.cache_rate > 0 then
      local fade = math.exp(-math.max(now - tonumber(c[3]), 0) / CACHE_TAU_MS)
      node.cache_rate = node.cache_rate * fade
    end
    node.cache_cap = tonumber(c[4])
  end
  by_name[node.name] = node
  local sk = p .. 'speed:' .. node.name .. '|' .. model
  local learned = redis.call('HMGET', sk, 'd', 'p', 'n', 't', 'c')
  node.kept = tonumber(learned[5]) or 1  -- the share of expected prefixes its cache held
  if learned[1] then
    local age = math.max(0, now - tonumber(learned[4]))
    node.trust = math.min(1, tonumber(learned[3]) * math.exp(-age / tau_prior) / min_samples)
    node.d, node.pf = tonumber(learned[1]), tonumber(learned[2])
    sum_d = sum_d + node.d * node.trust
    sum_p = sum_p + node.pf * node.trust
    sum_score = sum_score + node.score * node.trust
  end
  nodes[i + 1] = node
end
-- Sequences running per live conversation, cluster-wide now, and at least CONVERSATION_DUTY:
-- while every user is thinking nothing runs, yet their next turns will.
local CONVERSATION_DUTY = 0.3
local per_conversation = CONVERSATION_DUTY
if sum_conversations > 0 then
  per_conversation = math.max(sum_busy / sum_conversations, CONVERSATION_DUTY)
end
local kept_affine = 1  -- how much of its conversations the node holding this one keeps
for _, node in ipairs(nodes) do
  if node.name == affine then kept_affine = node.kept end
end
local unit_d, unit_p = unit_prior, unit_prior * prefill_ratio
if sum_score > 0 then unit_d, unit_p = sum_d / sum_score, sum_p / sum_score end
-- Each node's speeds now: learned, blended with the prior while its samples are few or old,
-- scaled by health and temperature. And the decode speed where the live conversations are,
-- on average: a conversation keeps a slower node's slots busy for longer than that.
local conv_d, conv_n = 0, 0
for _, node in ipairs(nodes) do
  local d = node.trust * node.d + (1 - node.trust) * node.score * unit_d * node.busy
  local pf = node.trust * node.pf + (1 - node.trust) * node.score * unit_p * node.busy
  node.d_now, node.pf_now = math.max(d * node.live, 1e-6), math.max(pf * node.live, 1e-6)
  if spread then
    conv_d, conv_n = conv_d + node.d_now * node.conversations, conv_n + node.conversations
  end
end
if conv_n > 0 then conv_d = conv_d / conv_n end
-- Where the conversations are, each keeps per_conversation sequences running: its turns run
-- for this many times as long as its user thinks between them.
local busy_to_idle = math.min(per_conversation, 0.9) / (1 - math.min(per_conversation, 0.9))

-- Erlang C: the chance that a request finds all c slots busy at utilisation u (< 1), from
-- Erlang B's recursion (the textbook sum of load^k / k! overflows for a few hundred slots).
local function erlang_c(c, u)
  local load, b = c * u, 1
  for k = 1, c do b = load * b / (k + load * b) end
  return b / (1 - u * (1 - b))
end
-- The turns a conversation has still to come, on average: after a first turn q1 / (1 - q2),
-- after a later one q2 / (1 - q2).
local turns_to_come = 0
-- What the later turns may lose counts ten times its mean: a follow-up that waits seconds
-- once in a hundred is what its user notices (the benchmark's target is the p99).
local TAIL_WEIGHT = 10
if spread then
  turns_to_come = (affine == nil and conv_q[1] or conv_q[2]) / (1 - conv_q[2])
end

-- Does a candidate (preferred GPU type?, seconds) beat the best so far? After a failure the
-- retry's preferred GPU type ranks first, then the expected seconds.
local function better(pref, score, other, other_pref, other_score)
  return other == nil or (pref and not other_pref) or (pref == other_pref and score < other_score)
end

-- Seconds until a slot is free for a request that `ahead` others wait in front of on a node
-- with `free` slots free now, decoding at `d` tokens/s: what runs there frees its slot when
-- it should finish, and each request ahead then holds a slot for its expected time, soonest
-- slot first. Both are recorded as work in decode tokens (when admitted, when queued), so
-- they are priced at the node's speed now: a node that slows down is seen to be slower in
-- what it already holds too. `extra` requests the server queues for other clients count as
-- `service` each.
local function slot_wait(name, free, ahead, extra, service, d)
  local times = {}
  for _ = 1, free do times[#times + 1] = 0 end
  local leases = redis.call('ZRANGE', p .. 'slots:' .. name, 0, -1)
  if #leases > 0 then
    local work = redis.call('HMGET', p .. 'work:' .. name, unpack(leases))
    for i = 1, #leases do
      local started, units = string.match(work[i] or '', '^(%d+):(.+)$')
      if started then
        local total = tonumber(units) / d
        -- Overdue: it was slower than expected; assume a tenth of it is still to come.
        local left = tonumber(started) / 1000 + total - now / 1000
        times[#times + 1] = math.max(left, total / 10)
      else
        times[#times + 1] = service / 2
      end
    end
  end
  if #times == 0 then return service * (ahead + extra + 1) end
  local durations = {}
  if ahead > 0 then
    local before = redis.call('ZRANGE', p .. 'qorder:' .. name, 0, math.min(ahead, 64) - 1)
    if #before > 0 then
      local known = redis.call('HMGET', p .. 'qwork:' .. name, unpack(before))
      for i = 1, #before do
        local units = tonumber(known[i])
        durations[i] = units and units / d or service
      end
    end
  end
  for _ = #durations + 1, ahead + extra do durations[#durations + 1] = service end
  table.sort(times)
  for _, duration in ipairs(durations) do
    local start = table.remove(times, 1)
    local done, at = start + duration, #times + 1
    for j = 1, #times do
      if times[j] > done then at = j break end
    end
    table.insert(times, at, done)
  end
  return times[1]
end

local best, best_score, best_pref = nil, nil, false
local second, second_score = nil, nil
local qbest, qbest_score, qbest_pref, qbest_with_full, qbest_d = nil, nil, false, 0, 1
local best_running, best_d, best_own, second_own, qbest_own = 0, 1, 0, 0, 0
local second_queued = ''  -- '1': the runner-up is a place in a queue
local alive = 0
for _, node in ipairs(nodes) do
  local name, maxc = node.name, node.maxc
  local ejected = tonumber(redis.call('HGET', p .. 'eject:' .. name, 'until') or '0')
  if ejected <= now then
    alive = alive + 1
    local sk = p .. 'slots:' .. name
    redis.call('ZREMRANGEBYSCORE', sk, '-inf', now)
    local inflight = redis.call('ZCARD', sk)
    local waiting = waiting_on(name)
    -- Requests queued here have the first claim on its free slots: a newcomer gets one only
    -- when there are more free slots than waiting requests, a queued one by its place.
    local ahead = waiting
    if name == queued_at then
      ahead = redis.call('ZRANK', p .. 'qorder:' .. name, lease) or waiting
    end
    -- The server's own view (vLLM, SGLang, llama.cpp metrics): work it runs for others,
    -- requests it queues, a KV cache too full to start another sequence soon.
    local extra, full = 0, false
    local srv = redis.call('HMGET', p .. 'srvload:' .. name, 'running', 'waiting', 'kv')
    if srv[1] then
      extra = math.max(0, (tonumber(srv[1]) or 0) - inflight) + (tonumber(srv[2]) or 0)
      full = (tonumber(srv[3]) or 0) >= 0.97
    end
    local d, pf = node.d_now, node.pf_now
    local hit = 0
    if name == affine then hit = cached * node.kept end
    -- Expected completion time: this request's prefill (less what the node has cached) and
    -- its decode, slowed by the sequences it would share the GPU with.
    local running_now = inflight + extra
    local running = running_now
    if spread and turns_to_come > 0 then
      -- How busy its slots have been of late, as requests that may start conversations
      -- find them (an average over OCCUPANCY_TAU_MS): the conversations it holds keep it so.
      -- (Not sampled while they seem to be one-off requests: nothing reads it then.)
      local fade = math.exp(-math.max(now - node.occ_at, 0) / OCCUPANCY_TAU_MS)
      node.occ = node.occ * fade + running_now * (1 - fade)
      redis.call('HSET', p .. 'pcache:' .. name, 'occ', node.occ, 'ot', now)
      redis.call('PEXPIRE', p .. 'pcache:' .. name, 86400000)
    end
    local future = 0  -- what the turns still to come expect to lose on this node
    if spread and name ~= affine then
      -- A conversation's turns take conv_d / d times as long on this node, between the same
      -- pauses: it keeps more (or fewer) sequences running here.
      local duty = per_conversation
      if conv_n > 0 then
        local here = busy_to_idle * conv_d / d
        duty = here / (1 + here)
      end
      local projected = node.conversations * duty
      running = math.max(running, projected)
      -- Its later turns, joining what keeps the node's slots busy (its live conversations,
      -- what runs there now or what its slots have been of late, whichever is more), wait
      -- for a slot as in a queue of maxc servers (Erlang C); and each is a miss, paying its
      -- history again, when the node has cached more than its cache holds during the
      -- user's pause (exponential, of mean conv_gap) since the turn before.
      local utilisation = math.min((math.max(projected, node.occ, running_now) + duty) / maxc,
        0.98)
      local turn_s = output / d * (1 + slowdown * math.min(running, maxc - 1))
      local wait_s = erlang_c(maxc, utilisation) * turn_s / (maxc * (1 - utilisation))
      local miss = 0
      if node.cache_cap and node.cache_rate > 0 then
        miss = math.exp(-node.cache_cap / (node.cache_rate * conv_gap))
      end
      future = TAIL_WEIGHT * turns_to_come * (wait_s + miss * (prompt + output) / pf)
    end
    local prefill_s = math.max(prompt - hit, 0) / pf
    local decode_s = output / d * (1 + slowdown * math.min(running, maxc - 1))
    local own = prefill_s + decode_s
    -- Wherever it is, each later turn waits for its first token while the node prefills the
    -- answer and a new message (about twice the answer) and decodes one token.
    if spread then
      future = future + turns_to_come * (2 * output / pf + decode_s / math.max(output, 1))
    end
    local objective = prefill_s + pace * decode_s + future
    -- Moving a conversation also gives up its cache for the turns after this one: another
    -- node must be clearly better than the one holding it (as far as that one keeps them).
    if affine and name ~= affine then
      objective = objective * (1 + REBALANCE_MARGIN * kept_affine)
    end
    local pref = prefer ~= '' and node.gpu == prefer
    if inflight + ahead + extra < maxc and not full then
      if better(pref, objective, best, best_pref, best_score) then
        if best ~= nil then second, second_score, second_own = best, best_score, best_own end
        best, best_score, best_pref, best_d = name, objective, pref, d
        best_own, best_running = own, running_now + 1
      elseif second == nil or objective < second_score then
        second, second_score, second_own = name, objective, own
      end
    elseif allow_queue and node.qsize > 0
        and ((queued_at == '' and waiting < node.qsize) or name == queued_at) then
      -- Waiting here may still beat a free slot on a slower node: the wait for a slot (from
      -- what runs here and when it should finish), then the request with the batch full.
      local decode_full = output / d * (1 + slowdown * (maxc - 1))
      local with_full = prefill_s + decode_full
      local wait = slot_wait(name, math.max(0, maxc - inflight), ahead, extra, with_full, d)
      if full then wait = wait + with_full end  -- its KV cache must drain first
      local score = wait + prefill_s + pace * decode_full
      if better(pref, score, qbest, qbest_pref, qbest_score) then
        qbest, qbest_score, qbest_pref, qbest_with_full, qbest_d = name, score, pref, with_full, d
        qbest_own = wait + with_full
      end
    end
  end
end

local verdict, chosen
local queue_wins = qbest ~= nil and better(qbest_pref, qbest_score, best, best_pref, best_score)
if best ~= nil and not queue_wins then
  redis.call('ZADD', p .. 'slots:' .. best, now + ttl, lease)
  -- When it started and its work in decode tokens, for the waits of requests after it.
  redis.call('HSET', p .. 'work:' .. best, lease,
    string.format('%d:%.2f', now, best_own * best_d))
  redis.call('PEXPIRE', p .. 'work:' .. best, ttl)
  if queued_at ~= '' then
    redis.call('ZREM', p .. 'queue:' .. queued_at, lease)
    redis.call('ZREM', p .. 'qorder:' .. queued_at, lease)
    redis.call('HDEL', p .. 'qwork:' .. queued_at, lease)
    if best ~= queued_at and redis.call('ZCARD', p .. 'queue:' .. queued_at) > 0 then
      redis.pcall('PUBLISH', p .. 'freed:' .. queued_at, '')  -- those behind it move up
    end
  end
  verdict, chosen = 'ok', best
  -- A queue that lost to this free slot is the runner-up when it came closer than the next
  -- free slot (why a conversation left the busy node holding its prefix, for one).
  if qbest ~= nil and (second == nil or qbest_score < second_score) then
    second, second_own, second_queued = qbest, qbest_own, '1'
  end
elseif queued_at ~= '' then
  -- Still waiting: extend the place (and take a new one at the back if it had lapsed).
  redis.call('ZADD', p .. 'queue:' .. queued_at, now + qttl, lease)
  redis.call('ZADD', p .. 'qorder:' .. queued_at, 'NX', now, lease)
  return {'queued', queued_at, '0', tostring(rem_r), tostring(rem_t)}
elseif qbest ~= nil then
  redis.call('ZADD', p .. 'queue:' .. qbest, now + qttl, lease)
  redis.call('ZADD', p .. 'qorder:' .. qbest, now, lease)
  -- How long it will hold a slot, for the waits of requests that queue behind it.
  redis.call('HSET', p .. 'qwork:' .. qbest, lease,
    string.format('%.2f', qbest_with_full * qbest_d))
  redis.call('PEXPIRE', p .. 'qwork:' .. qbest, ttl)
  verdict, chosen = 'queued', qbest
  if best ~= nil then second, second_own = best, best_own else second = nil end
  best_own = qbest_own
elseif alive == 0 then
  return {'ejected', '', '0', '0', '0'}
else
  return {'full', '', '0', '0', '0'}
end

-- The chosen node will hold this prompt's prefix once it runs there: remember it, bounded
-- (oldest out first). Not while it only waits in a queue: its next call would find its own
-- record, and take the node it waits at for the one holding its conversation.
local since = -1  -- tokens the node holding the prefix has cached since it took it
if verdict == 'ok' and nrec > 0 then
  -- What the chosen node's cache takes in: the prompt it prefills and the answer. A prefix
  -- is remembered with the node's flow counter after it, so a later turn knows how much the
  -- node has cached since (and RELEASE, from whether the prefix was still there, how much it
  -- holds).
  local node = by_name[chosen]
  if chosen == affine and affine_flow then
    since = math.max(node.cache_flow - affine_flow, 0)
  end
  -- All of it, cached or not: least recently used goes first, and what a turn reads from
  -- the cache is used again as much as what it adds.
  local added = prompt + output
  local flow = node.cache_flow + added
  redis.call('HSET', p .. 'pcache:' .. chosen, 'flow', flow,
    'rate', node.cache_rate + added / CACHE_TAU_MS, 't', now)
  redis.call('PEXPIRE', p .. 'pcache:' .. chosen, 86400000)
  local value = chosen .. ' ' .. flow
  for i = 0, nrec - 1 do
    local id = ARGV[records + i]
    redis.call('SET', p .. 'aff:' .. id, value, 'PX', aff_ttl)
    redis.call('ZADD', p .. 'affidx', now, id)
  end
  -- A conversation begun, or continued (its prompt extends the one found, not merely
  -- repeats it): live on the node it is now on until its turn's expected end, then fading
  -- (see live_conversations). Its member is its last identity: a session's own, which stays
  -- the same from turn to turn, else the whole prompt's, which the next turn finds.
  if spread then
    local member, kind = ARGV[records + nrec - 1], 1
    local stats = conv_stats  -- continued, ended: first turns, then later ones
    for k = 1, 4 do stats[k] = stats[k] * 0.998 end  -- the last several hundred turns count
    if matched then
      kind = 2
      for was = 2, 1, -1 do
        local key = CONV_KEYS[was] .. affine
        local ended = redis.call('ZSCORE', key, matched)
        if ended then
          redis.call('ZREM', key, matched)
          stats[was * 2 - 1] = stats[was * 2 - 1] + 1
          conv_gap = conv_gap + (math.max(now - tonumber(ended), 0) - conv_gap) * 0.05
          break
        end
      end
    end
    local ck = CONV_KEYS[kind] .. chosen
    redis.call('ZADD', ck, now + math.floor(best_own * 1000), member)
    -- Those idle too long have ended without another turn.
    local gone = redis.call('ZREMRANGEBYSCORE', ck, '-inf', now - conv_ended_ms)
    stats[kind * 2] = stats[kind * 2] + gone
    redis.call('HSET', p .. 'convstats', 'c1', stats[1], 'e1', stats[2], 'c2', stats[3],
      'e2', stats[4], 'gap', conv_gap)
    redis.call('PEXPIRE', p .. 'convstats', 86400000)
    redis.call('PEXPIRE', ck, CONVERSATION_IDLE_MS)
  end
  if nrec > 0 and redis.call('ZCARD', p .. 'affidx') > aff_cap then
    local popped = redis.call('ZPOPMIN', p .. 'affidx', 16)  -- member, score, member, ...
    for i = 1, #popped, 2 do redis.call('DEL', p .. 'aff:' .. popped[i]) end
  end
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
-- Why: the chosen node's expected seconds to complete, the runner-up's, the node holding
-- the prefix and the tokens it holds, the sequences running there with this one, whether the
-- runner-up would have waited in a queue.
return {verdict, chosen, '0', tostring(rem_r), tostring(rem_t), tostring(best_own),
  second or '', tostring(second and second_own or -1), affine or '', tostring(best_running),
  tostring(cached), second_queued, tostring(since)}
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
    redis.call('HDEL', p .. 'qwork:' .. node, lease)
  else
    redis.call('ZREM', p .. 'slots:' .. node, lease)
    redis.call('HDEL', p .. 'work:' .. node, lease)
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
-- ARGV[11..22]: what the answer says of the node's speed (gateway.routing.speed_sample), when
-- ARGV[11] (the model) is set: one sequence's decode and prefill tokens per second, folded
-- into a running average whose old samples fade with time constant tau, so a node that slows
-- down is seen within seconds; n counts the samples behind it (fading the same way).
if ARGV[11] and ARGV[11] ~= '' then
  local sk = p .. 'speed:' .. ARGV[12] .. '|' .. ARGV[11]
  local decode, prefill = tonumber(ARGV[13]), tonumber(ARGV[14])
  -- The decode speed came with sequences sharing the GPU: as many as when it was admitted
  -- at first, as many as now at the end (its own slot included); normalised to it alone by
  -- their mean, since the busiest node fills up while its requests run.
  local shared = (tonumber(ARGV[20]) + redis.call('ZCARD', p .. 'slots:' .. ARGV[12]) + 1) / 2
  decode = decode * (1 + tonumber(ARGV[21]) * math.max(shared - 1, 0))
  local tau, n_max = tonumber(ARGV[15]), tonumber(ARGV[16])
  local cur = redis.call('HMGET', sk, 'd', 'p', 'n', 't')
  if decode <= 0 and prefill <= 0 then
    -- nothing learned of the speed (a short answer); the answer length below still counts
  elseif cur[1] then
    local keep = math.exp(-math.max(0, now - tonumber(cur[4])) / tau)
    local n = math.min(tonumber(cur[3]) * keep + 1, n_max)
    local d, pf = tonumber(cur[1]), tonumber(cur[2])
    -- One odd answer (a stall, a clock jump) moves the average by at most a factor of 4.
    if decode > 0 then d = d + (math.min(math.max(decode, d / 4), d * 4) - d) / n end
    if prefill > 0 then pf = pf + (math.min(math.max(prefill, pf / 4), pf * 4) - pf) / n end
    redis.call('HSET', sk, 'd', d, 'p', pf, 'n', n, 't', now)
  elseif decode > 0 then
    if prefill <= 0 then prefill = decode * tonumber(ARGV[17]) end
    redis.call('HSET', sk, 'd', decode, 'p', prefill, 'n', 1, 't', now)
  end
  if cur[1] or decode > 0 then redis.call('PEXPIRE', sk, 86400000) end
  if ARGV[19] ~= '' and cur[1] then
    -- Of the prefix a conversation's node was expected to hold, the share it still held (the
    -- server's own count): a node whose cache keeps dropping conversations holds too many.
    local kept = tonumber(ARGV[19])
    local c = tonumber(redis.call('HGET', sk, 'c') or '1')
    redis.call('HSET', sk, 'c', c + (kept - c) * 0.1)
    -- And how many tokens its cache holds: more than the node had cached since the prefix
    -- when it was still there, fewer when it was gone (least recently used goes first).
    -- Unknown until a prefix is lost; then it moves half way to each answer that disagrees.
    local since = tonumber(ARGV[22])
    if since >= 0 then
      local ck = p .. 'pcache:' .. ARGV[12]
      local cap = tonumber(redis.call('HGET', ck, 'cap') or '')
      if kept < 0.5 and (cap == nil or since < cap) then
        cap = cap and cap + (since - cap) / 2 or since
      elseif kept >= 0.5 and cap and since > cap then
        cap = cap + (since - cap) / 2
      else
        cap = nil
      end
      if cap then redis.call('HSET', ck, 'cap', math.max(cap, 1)) end
    end
  end
  if ARGV[18] ~= '' then  -- the model's usual answer length, for requests without max_tokens
    local was = tonumber(redis.call('HGET', p .. 'outlen', ARGV[11]) or ARGV[18])
    redis.call('HSET', p .. 'outlen', ARGV[11], was + (tonumber(ARGV[18]) - was) * 0.05)
  end
end
-- ARGV[23..]: metrics and the log entry (absent for a release between retry attempts).
if #ARGV > 22 then
  local model, label = ARGV[23], ARGV[24]
  redis.call('HINCRBY', p .. 'm:requests', label, 1)
  redis.call('SADD', p .. 'm:models', model)
  if ARGV[25] ~= '' then
    redis.call('HINCRBY', p .. 'm:duration:' .. model, ARGV[25], 1)
    redis.call('HINCRBYFLOAT', p .. 'm:duration:' .. model, 'sum', ARGV[26])
  end
  if ARGV[27] ~= '' then
    redis.call('HINCRBY', p .. 'm:ttft:' .. model, ARGV[27], 1)
    redis.call('HINCRBYFLOAT', p .. 'm:ttft:' .. model, 'sum', ARGV[28])
  end
  if ARGV[29] ~= '0' then redis.call('HINCRBY', p .. 'm:tokens', ARGV[31], ARGV[29]) end
  if ARGV[30] ~= '0' then redis.call('HINCRBY', p .. 'm:tokens', ARGV[32], ARGV[30]) end
  redis.call('RPUSH', p .. 'requestlog', ARGV[33])
  if ARGV[34] and ARGV[34] ~= '' then redis.call('HINCRBY', p .. 'm:affinity', ARGV[34], 1) end
end
return cooldown
"""

# A lease whose admission reply was never read: out of every slot set and queue it could be in.
FORGET = r"""
local p = KEYS[1]
local lease = ARGV[1]
for i = 2, #ARGV do
  redis.call('ZREM', p .. 'slots:' .. ARGV[i], lease)
  redis.call('HDEL', p .. 'work:' .. ARGV[i], lease)
  redis.call('ZREM', p .. 'queue:' .. ARGV[i], lease)
  redis.call('ZREM', p .. 'qorder:' .. ARGV[i], lease)
  redis.call('HDEL', p .. 'qwork:' .. ARGV[i], lease)
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
    # Why this node (ok and queued only): its expected seconds, the runner-up and its
    # seconds, the node holding the request's prefix and the tokens it holds, and the
    # sequences running on the chosen node with this one; whether the runner-up would have
    # waited in its queue.
    expected_s: float = 0.0
    runner_up: str = ""
    runner_up_s: float = 0.0
    affine: str = ""
    running: int = 0
    cached: int = 0
    runner_up_queued: bool = False
    # Tokens the node holding the prefix has cached since it took it (-1: not known).
    cache_since: int = -1


DEFAULT_ROUTING = routing.Policy(
    slowdown=0.15,
    speed_tau_ms=5_000,
    trust_ms=60_000,
    min_samples=5.0,
    affinity=True,
    affinity_ttl_ms=600_000,
    affinity_max=200_000,
)


@dataclass(frozen=True, slots=True)
class EjectionPolicy:
    after_failures: int = 3
    base_cooldown_ms: int = 5_000
    max_cooldown_ms: int = 120_000


class Admission:
    def __init__(
        self,
        client: aredis.Redis,
        resp: RespClient,
        policy: EjectionPolicy | None = None,
        routing_policy: routing.Policy | None = None,
    ) -> None:
        # The per-request calls (admit, release) go through the lean client; redis-py
        # loads the scripts and renews leases.
        self._resp = resp
        self._admit = client.register_script(ADMIT)
        self._release = client.register_script(RELEASE)
        self._renew = client.register_script(RENEW)
        self._forget = client.register_script(FORGET)
        self.policy = policy or EjectionPolicy()
        self.routing = routing_policy or DEFAULT_ROUTING

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
        request: routing.Request | None = None,
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
        args += routing.admit_args(request, self.routing, candidates)
        raw = await self._resp.evalsha(self._admit.sha, ADMIT, [redis_keys.PREFIX], args)
        values = [v.decode() if isinstance(v, bytes) else str(v) for v in raw]
        status, node_name, retry, rem_r, rem_t = values[:5]
        if len(values) < 11:
            return Verdict(status, node_name, int(retry), int(rem_r), int(rem_t))
        return Verdict(
            status,
            node_name,
            int(retry),
            int(rem_r),
            int(rem_t),
            float(values[5]),
            values[6],
            float(values[7]),
            values[8],
            int(values[9]),
            int(float(values[10])),
            values[11] == "1",
            int(float(values[12])),
        )

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
        learned: list[Any] | None = None,
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
        if learned or record:
            args += learned or routing.release_args("", "", None, None, self.routing)
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
