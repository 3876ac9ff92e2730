"""The admission script's choice by expected completion time, against the real Redis: the
GPU-type prior, speeds learned from answers (and unlearned when a node slows down), the work
already running, conversation affinity and its limits, and the server's own load signals."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from clawdbot_site import redis_keys
from gateway import prefixes, routing
from gateway.admission import Admission
from gateway.leases import Lease
from tests.gateway.admitting import admission_on, admit, route

pytestmark = pytest.mark.slow  # real Redis

MODEL = "qwen3:32b"
SHORT = routing.Request(MODEL, 50, 200)


def conversation(record: str = "", lookups: tuple[tuple[str, int], ...] = ()) -> routing.Request:
    found = prefixes.Prefixes((record,) if record else (), lookups)
    return routing.Request(MODEL, 4000, 100, found)


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def holder(redis_client: redis.Redis, identity: str) -> str | None:
    """The node remembered as holding a prefix (its record also says how much the node's
    cache had taken in by then)."""
    value = redis_client.get(redis_keys.PREFIX + redis_keys.AFFINITY_PART + identity)
    return text(value).split(" ")[0] if value else None


async def teach(admission: Admission, node: str, decode: float, times: int = 20) -> None:
    """Answers from `node` showing one sequence decoding at `decode` tokens/s."""
    for _ in range(times):
        learned = routing.release_args(MODEL, node, (decode, decode * 60), 100, admission.routing)
        await admission.release(None, outcome="ok", learned=learned)


async def test_without_samples_the_gpu_type_prior_decides(redis_client: redis.Redis) -> None:
    a10, h100 = route("a10", prior=100), route("h100", prior=380)
    async with admission_on() as admission:
        verdict = await admit(admission, "1", a10, h100, request=SHORT)
    assert verdict.node == "h100"
    assert verdict.runner_up == "a10" and verdict.runner_up_s > verdict.expected_s > 0


async def test_learned_speed_overrides_a_wrong_prior(redis_client: redis.Redis) -> None:
    # An "H100" serving a model it runs slowly (an unfavourable quantisation, say).
    a100, h100 = route("a100", prior=220), route("h100", prior=380)
    async with admission_on() as admission:
        await teach(admission, "a100", decode=60)
        await teach(admission, "h100", decode=25)
        verdict = await admit(admission, "1", a100, h100, request=SHORT)
    assert verdict.node == "a100"
    assert verdict.expected_s == pytest.approx(50 / 3600 + 200 / 60, rel=0.05)


async def test_a_node_that_slows_down_is_noticed(redis_client: redis.Redis) -> None:
    fast, other = route("fast", prior=380), route("other", prior=220)
    async with admission_on() as admission:
        await teach(admission, "fast", decode=100)
        await teach(admission, "other", decode=60)
        assert (await admit(admission, "1", fast, other, request=SHORT)).node == "fast"
        await admission.release(Lease("1", "fast"), outcome="ok")
        # Throttled to a third of its speed: the average follows within its samples.
        await teach(admission, "fast", decode=33, times=40)
        assert (await admit(admission, "2", fast, other, request=SHORT)).node == "other"


async def test_an_unlearned_node_is_priced_in_the_learned_nodes_units(
    redis_client: redis.Redis,
) -> None:
    learned, new = route("learned", prior=100), route("new", prior=380)
    async with admission_on() as admission:
        await teach(admission, "learned", decode=30)
        verdict = await admit(admission, "1", learned, new, request=SHORT)
    # The new node's prior says 3.8 times the learned one's speed: 114 tokens/s.
    assert verdict.node == "new"
    assert verdict.expected_s == pytest.approx(50 / (114 * 60) + 200 / 114, rel=0.05)


async def test_work_running_on_a_node_counts(redis_client: redis.Redis) -> None:
    busy, idle = route("busy", max_concurrent=8, prior=120), route("idle", prior=100)
    async with admission_on() as admission:
        for i in range(7):  # seven sequences already share busy's GPU
            assert (await admit(admission, f"b{i}", busy, request=SHORT)).node == "busy"
        verdict = await admit(admission, "new", busy, idle, request=SHORT)
    assert verdict.node == "idle"


async def test_a_conversation_goes_back_to_the_node_holding_its_prefix(
    redis_client: redis.Redis,
) -> None:
    a, b = route("a", prior=220), route("b", prior=240)
    async with admission_on() as admission:
        first = await admit(admission, "1", a, b, request=conversation("turn1"))
        assert first.node == "b" and first.affine == ""
        await admission.release(Lease("1", "b"), outcome="ok")
        # Turn two: its prefix is turn one's prompt, 4,000 tokens b need not prefill again.
        request = conversation("turn2", (("turn2-longer", 4100), ("turn1", 3900)))
        again = await admit(admission, "2", a, b, request=request)
        assert (again.node, again.affine, again.cached) == ("b", "b", 3900)
        # Even when the other node is faster, while the cache saves more than it loses.
        await teach(admission, "a", decode=40)
        await teach(admission, "b", decode=30)
        third = await admit(admission, "3", a, b, request=conversation("t3", (("turn2", 4000),)))
    assert third.node == "b" and third.expected_s < third.runner_up_s


async def test_affinity_never_sends_work_to_a_full_or_ejected_node(
    redis_client: redis.Redis,
) -> None:
    a, b = route("a", max_concurrent=1, prior=100), route("b", max_concurrent=1, prior=100)
    async with admission_on() as admission:
        assert (await admit(admission, "1", a, request=conversation("c1"))).node == "a"
        # a is busy (its one slot taken): the conversation's next turn goes to b.
        nxt = await admit(admission, "2", a, b, request=conversation("c2", (("c1", 3900),)))
        assert (nxt.node, nxt.affine) == ("b", "a")
        await admission.release(Lease("2", "b"), outcome="ok")
        await admission.release(Lease("1", "a"), outcome="ok")
        redis_client.hset(redis_keys.ejection("a"), "until", 2**50)
        later = await admit(admission, "3", a, b, request=conversation("c3", (("c1", 3900),)))
    assert later.node == "b"


async def test_remembered_prefixes_are_bounded(redis_client: redis.Redis) -> None:
    import dataclasses

    node = route("a")
    async with admission_on() as admission:
        admission.routing = dataclasses.replace(admission.routing, affinity_max=100)
        for i in range(150):
            verdict = await admit(admission, f"l{i}", node, request=conversation(f"p{i}"))
            await admission.release(Lease(f"l{i}", verdict.node), outcome="ok")
    index = redis_keys.PREFIX + redis_keys.AFFINITY_INDEX_PART
    assert redis_client.zcard(index) <= 100
    assert redis_client.get(redis_keys.PREFIX + redis_keys.AFFINITY_PART + "p0") is None
    assert holder(redis_client, "p149") == "a"
    assert 0 < redis_client.pttl(redis_keys.PREFIX + redis_keys.AFFINITY_PART + "p149")


async def test_the_servers_own_queue_and_full_kv_cache_count(redis_client: redis.Redis) -> None:
    vllm, other = route("vllm", prior=380), route("other", prior=200)
    key = redis_keys.PREFIX + redis_keys.SERVER_LOAD_PART
    async with admission_on() as admission:
        assert (await admit(admission, "1", vllm, other, request=SHORT)).node == "vllm"
        await admission.release(Lease("1", "vllm"), outcome="ok")
        # Its KV cache is full: no new sequence starts there soon.
        redis_client.hset(key + "vllm", mapping={"running": 1, "waiting": 0, "kv": 0.99})
        assert (await admit(admission, "2", vllm, other, request=SHORT)).node == "other"
        await admission.release(Lease("2", "other"), outcome="ok")
        # Clients beside the gateway keep it running three sequences and queue two more.
        redis_client.hset(key + "vllm", mapping={"running": 3, "waiting": 2, "kv": 0.5})
        assert (await admit(admission, "3", vllm, other, request=SHORT)).node == "other"
        await admission.release(Lease("3", "other"), outcome="ok")
        # The signal lapses with the scrape that wrote it: back to the gateway's own count.
        redis_client.delete(key + "vllm")
        assert (await admit(admission, "4", vllm, other, request=SHORT)).node == "vllm"


async def test_the_usual_answer_length_stands_in_for_a_missing_max_tokens(
    redis_client: redis.Redis,
) -> None:
    node = route("n", prior=100)
    async with admission_on() as admission:
        await teach(admission, "n", decode=30)
        for _ in range(200):
            learned = routing.release_args(MODEL, "n", None, 1000, admission.routing)
            await admission.release(None, outcome="ok", learned=learned)
        verdict = await admit(admission, "1", node, request=routing.Request(MODEL, 10, None))
    # Answers of 100, then many of 1,000 tokens: the average has moved most of the way.
    assert 900 / 30 < verdict.expected_s < 1010 / 30


async def test_waiting_for_a_much_faster_node_beats_a_free_slow_one(
    redis_client: redis.Redis,
) -> None:
    h100 = route("h100", max_concurrent=1, queue_size=4, prior=380)
    a10 = route("a10", max_concurrent=1, queue_size=4, prior=100)
    short, long = routing.Request(MODEL, 50, 10), routing.Request(MODEL, 50, 1000)
    async with admission_on() as admission:
        assert (await admit(admission, "short", h100, a10, request=short)).node == "h100"
        # The long answer takes 1000/114 s on the H100 once the short one is done (in about
        # 0.1 s), and 1000/30 s on the idle A10: it waits for the H100.
        queued = await admit(admission, "long", h100, a10, request=long)
        assert (queued.status, queued.node, queued.runner_up) == ("queued", "h100", "a10")
        still = await admit(admission, "long", h100, a10, request=long, queued_at="h100")
        assert still.status == "queued"
        # Another short one takes the free A10 slot rather than queue behind the long one;
        # the queue it passed up is its runner-up.
        s2 = await admit(admission, "s2", h100, a10, request=short)
        assert (s2.node, s2.runner_up, s2.runner_up_queued) == ("a10", "h100", True)
        assert s2.runner_up_s > s2.expected_s
        await admission.release(Lease("short", "h100"), outcome="ok")
        granted = await admit(admission, "long", h100, a10, request=long, queued_at="h100")
    assert (granted.status, granted.node) == ("ok", "h100")
    work = redis_client.hgetall(redis_keys.PREFIX + redis_keys.WORK_PART + "h100")
    assert list(work) == [b"long"]  # the finished one's expected finish went with its slot


async def test_a_request_waiting_in_a_queue_holds_no_prefix_there_yet(
    redis_client: redis.Redis,
) -> None:
    a = route("a", max_concurrent=1, queue_size=4, prior=200)
    b = route("b", max_concurrent=1, queue_size=4, prior=100)
    async with admission_on() as admission:
        assert (await admit(admission, "long", a, request=routing.Request(MODEL, 50, 1000))).node
        assert (await admit(admission, "short", b, request=routing.Request(MODEL, 50, 1))).node
        opening = conversation("fresh", (("fresh", 4000),))
        waiting = await admit(admission, "new", a, b, request=opening)
        assert (waiting.status, waiting.node) == ("queued", "b")
        assert holder(redis_client, "fresh") is None
        await admission.release(Lease("long", "a"), outcome="ok")
        granted = await admit(admission, "new", a, b, request=opening, queued_at=waiting.node)
    # The faster node came free first: it runs there, as the new conversation it is (no node
    # held it before, the one it waited at neither).
    assert (granted.status, granted.node, granted.affine) == ("ok", "a", "")
    assert holder(redis_client, "fresh") == granted.node


async def test_new_conversations_spread_by_the_conversations_each_node_holds(
    redis_client: redis.Redis,
) -> None:
    fast, slow = (
        route("fast", max_concurrent=8, prior=105),
        route("slow", max_concurrent=8, prior=100),
    )
    async with admission_on() as admission:
        # Six conversations continue on the fast node (each turn found its node), one runs now.
        for i in range(6):
            first = await admit(admission, f"a{i}", fast, request=conversation(f"c{i}-1"))
            await admission.release(Lease(f"a{i}", first.node), outcome="ok")
            nxt = conversation(f"c{i}-2", ((f"c{i}-1", 3900),))
            again = await admit(admission, f"b{i}", fast, slow, request=nxt)
            assert again.affine == "fast"
            if i:
                await admission.release(Lease(f"b{i}", again.node), outcome="ok")
        conv = redis_keys.PREFIX + redis_keys.CONVERSATIONS_PART
        assert redis_client.zcard(conv + "fast") == 6
        # The fast node runs one sequence (alone it would take the next), but its six live
        # conversations will keep it busier: a new conversation goes to the idle slow node.
        # A request that continues one of the six still goes home.
        opening = prefixes.Prefixes(("fresh",), (("fresh", 40),))
        fresh = await admit(
            admission, "new", fast, slow, request=routing.Request(MODEL, 50, 100, opening)
        )
        assert (fresh.node, fresh.running) == ("slow", 1)
        home = await admit(
            admission, "c3", fast, slow, request=conversation("c3-3", (("c3-2", 4000),))
        )
    assert home.node == "fast"
    assert redis_client.zscore(conv + "fast", "c3-3") is not None
    assert redis_client.zscore(conv + "fast", "c3-2") is None


async def test_a_follow_up_stays_on_a_slower_node_when_the_fast_one_holds_many_conversations(
    redis_client: redis.Redis,
) -> None:
    """Placed on the slow node for the turns to come, a conversation is not pulled back to the
    fast node by its next turn: moving there is priced as joining its conversations."""
    fast, slow = (
        route("fast", max_concurrent=8, prior=380),
        route("slow", max_concurrent=8, prior=100),
    )
    async with admission_on() as admission:
        for i in range(20):  # 20 live conversations on the fast node's 8 slots
            first = await admit(admission, f"a{i}", fast, request=conversation(f"c{i}-1"))
            await admission.release(Lease(f"a{i}", first.node), outcome="ok")
            again = await admit(
                admission, f"b{i}", fast, request=conversation(f"c{i}-2", ((f"c{i}-1", 3900),))
            )
            await admission.release(Lease(f"b{i}", again.node), outcome="ok")
        new = await admit(admission, "x1", fast, slow, request=conversation("x-1"))
        await admission.release(Lease("x1", new.node), outcome="ok")
        follow_up = await admit(
            admission, "x2", fast, slow, request=conversation("x-2", (("x-1", 3900),))
        )
        # A one-off request is placed by speed alone: the fast node.
        one_off = await admit(admission, "y", fast, slow, request=SHORT)
    assert new.node == "slow"
    assert (follow_up.node, follow_up.affine) == ("slow", "slow")
    assert one_off.node == "fast"


async def test_a_node_whose_cache_drops_conversations_gets_less_credit_for_them(
    redis_client: redis.Redis,
) -> None:
    a, b = route("a", prior=100), route("b", prior=110)
    async with admission_on() as admission:
        await teach(admission, "a", decode=30)
        await teach(admission, "b", decode=31)
        first = await admit(admission, "1", a, b, request=conversation("t1"))
        assert first.node == "b"
        await admission.release(Lease("1", "b"), outcome="ok")
        full_credit = await admit(admission, "2", a, b, request=conversation("t2", (("t1", 3900),)))
        await admission.release(Lease("2", full_credit.node), outcome="ok")
        # b's server keeps reporting a tenth of the prefix it was expected to hold.
        for _ in range(30):
            learned = routing.release_args(MODEL, "b", (30, 1800), 100, admission.routing, 0.1)
            await admission.release(None, outcome="ok", learned=learned)
        kept = float(redis_client.hget(redis_keys.speed("b", MODEL), "c") or 0)
        less = await admit(admission, "3", a, b, request=conversation("t3", (("t2", 4000),)))
    assert full_credit.cached == 3900 and full_credit.node == "b"
    assert kept < 0.2
    assert less.node == "b" and less.expected_s > full_credit.expected_s + 1.5


async def test_a_speed_is_normalised_by_the_sequences_that_shared_the_gpu(
    redis_client: redis.Redis,
) -> None:
    node = route("n", max_concurrent=8, prior=100)
    async with admission_on() as admission:
        for i in range(4):  # four others run on the node when the answer comes back
            await admit(admission, f"o{i}", node, request=SHORT)
        # Admitted with one other, finished with four: 2.5 sharing on average.
        learned = routing.release_args(MODEL, "n", (20.0, 0.0), 100, admission.routing, None, 2)
        await admission.release(None, outcome="ok", learned=learned)
    stored = float(redis_client.hget(redis_keys.speed("n", MODEL), "d") or 0)
    assert stored == pytest.approx(20.0 * (1 + 0.15 * 2.5))


async def test_a_repeated_prompt_is_not_a_live_conversation(redis_client: redis.Redis) -> None:
    node = route("n", prior=100)
    conv = redis_keys.PREFIX + redis_keys.CONVERSATIONS_PART + "n"
    async with admission_on() as admission:
        for lease in ("1", "2", "3"):  # the same single prompt three times
            verdict = await admit(admission, lease, node, request=conversation("p", (("p", 3900),)))
            await admission.release(Lease(lease, verdict.node), outcome="ok")
        assert verdict.affine == "n"  # its node still holds it
        assert redis_client.zcard(conv) == 0
        longer = await admit(admission, "4", node, request=conversation("p2", (("p", 3900),)))
    assert longer.affine == "n" and redis_client.zcard(conv) == 1


# Users seen to go on: 9 in 10 first and later turns continued, with 4 s pauses between turns.
USERS_GO_ON: Any = {"c1": 90, "e1": 10, "c2": 90, "e2": 10, "gap": 4000}


def key(part: str, node: str = "") -> str:
    return redis_keys.PREFIX + part + node


async def test_conversations_idle_long_past_their_users_pauses_no_longer_count(
    redis_client: redis.Redis,
) -> None:
    """24 conversations on the fast node keep its slots busy while their turns have just
    ended: a new conversation goes to the idle slower node. Idle for two minutes (their users
    gone, at 4 s pauses), they count for nothing, and it goes to the fast node."""
    fast = route("fast", max_concurrent=8, prior=380)
    slow = route("slow", max_concurrent=8, prior=100)
    redis_client.hset(key(redis_keys.CONVERSATION_STATS_PART), mapping=USERS_GO_ON)
    now = int(time.time() * 1000)
    redis_client.zadd(key(redis_keys.CONVERSATIONS_PART, "fast"), {f"c{i}": now for i in range(24)})
    async with admission_on() as admission:
        busy = await admit(admission, "1", fast, slow, request=conversation("new1"))
        await admission.release(Lease("1", busy.node), outcome="ok")
        redis_client.zadd(
            key(redis_keys.CONVERSATIONS_PART, "fast"), {f"c{i}": now - 120_000 for i in range(24)}
        )
        gone = await admit(admission, "2", fast, slow, request=conversation("new2"))
    assert busy.node == "slow"
    assert gone.node == "fast"


async def test_what_users_do_is_learned_from_their_turns(redis_client: redis.Redis) -> None:
    node = route("n", max_concurrent=8, prior=100)
    stats = key(redis_keys.CONVERSATION_STATS_PART)
    first_turns = key(redis_keys.FIRST_TURNS_PART, "n")
    async with admission_on() as admission:
        first = await admit(admission, "1", node, request=conversation("t1"))
        await admission.release(Lease("1", first.node), outcome="ok")
        assert redis_client.zscore(first_turns, "t1") is not None
        # A conversation whose user left two minutes ago: it ends when the next is recorded.
        redis_client.zadd(first_turns, {"left": int(time.time() * 1000) - 120_000})
        await admit(admission, "2", node, request=conversation("t2", (("t1", 3900),)))
        await admit(admission, "3", node, request=conversation("other"))
    learned = {text(k): float(v) for k, v in redis_client.hgetall(stats).items()}
    # t1's first turn continued, "left" ended; the pause (none: the next turn came before
    # the first's expected end) moved the mean pause down from its prior 10 s.
    assert learned["c1"] == pytest.approx(1.0, abs=0.01)
    assert learned["e1"] == pytest.approx(1.0, abs=0.01)
    assert learned["gap"] < 10_000
    assert redis_client.zscore(first_turns, "t1") is None
    assert redis_client.zscore(first_turns, "left") is None
    assert redis_client.zscore(key(redis_keys.CONVERSATIONS_PART, "n"), "t2") is not None


async def test_how_much_a_cache_holds_is_learned_from_prefixes_it_kept_or_lost(
    redis_client: redis.Redis,
) -> None:
    node = route("n", max_concurrent=8, prior=100)
    cache = key(redis_keys.PREFIX_CACHE_PART, "n")
    async with admission_on() as admission:
        await teach(admission, "n", decode=30)
        first = await admit(admission, "1", node, request=conversation("a1"))
        await admission.release(Lease("1", first.node), outcome="ok")
        for i in range(5):  # five other conversations begin there: 5 x 4,100 tokens taken in
            other = await admit(admission, f"o{i}", node, request=conversation(f"o{i}"))
            await admission.release(Lease(f"o{i}", other.node), outcome="ok")
        again = await admit(admission, "2", node, request=conversation("a2", (("a1", 3900),)))
        assert (again.affine, again.cache_since) == ("n", 5 * 4100)
        assert redis_client.hget(cache, "cap") is None  # nothing lost yet: not known
        # The server answered without the prefix: the cache holds fewer tokens than that.
        lost = routing.release_args(MODEL, "n", None, None, admission.routing, 0.0, 1, 20500)
        await admission.release(Lease("2", "n"), outcome="ok", learned=lost)
        assert float(redis_client.hget(cache, "cap") or 0) == 20500
        # A prefix still there after 30,500 tokens more: it holds more, half way there.
        kept = routing.release_args(MODEL, "n", None, None, admission.routing, 1.0, 1, 30500)
        await admission.release(None, outcome="ok", learned=kept)
    assert float(redis_client.hget(cache, "cap") or 0) == 25500


async def test_a_new_conversation_avoids_a_node_whose_cache_would_drop_it(
    redis_client: redis.Redis,
) -> None:
    a = route("a", max_concurrent=8, prior=110)
    b = route("b", max_concurrent=8, prior=100)
    redis_client.hset(key(redis_keys.CONVERSATION_STATS_PART), mapping=USERS_GO_ON)
    async with admission_on() as admission:
        calm = await admit(admission, "1", a, b, request=conversation("x1"))
        await admission.release(Lease("1", calm.node), outcome="ok")
        # a's cache holds 50,000 tokens and takes in 20 a millisecond: a prefix outlives a
        # 2.5 s pause, and half of the users' 4 s pauses.
        now = int(time.time() * 1000)
        redis_client.hset(
            key(redis_keys.PREFIX_CACHE_PART, "a"), mapping={"cap": 50_000, "rate": 20, "t": now}
        )
        crowded = await admit(admission, "2", a, b, request=conversation("x2"))
        await admission.release(Lease("2", crowded.node), outcome="ok")
        # A one-off request has no later turns to lose there.
        one_off = await admit(admission, "3", a, b, request=SHORT)
    assert calm.node == "a"
    assert crowded.node == "b"
    assert one_off.node == "a"


async def test_single_turn_traffic_is_placed_by_its_own_time_alone(
    redis_client: redis.Redis,
) -> None:
    """Long one-off prompts are first turns that never continue: until some are seen to,
    nothing is priced for later turns, and the fast node takes them while it has slots."""
    fast = route("fast", max_concurrent=8, prior=380)
    slow = route("slow", max_concurrent=8, prior=100)
    async with admission_on() as admission:
        placed = [
            (await admit(admission, f"{i}", fast, slow, request=conversation(f"doc{i}"))).node
            for i in range(6)
        ]
    assert placed == ["fast"] * 6


async def test_a_node_with_a_thousand_slots_is_priced_like_any_other(
    redis_client: redis.Redis,
) -> None:
    big = route("big", max_concurrent=1000, prior=100)
    small = route("small", max_concurrent=8, prior=100)
    redis_client.hset(key(redis_keys.CONVERSATION_STATS_PART), mapping=USERS_GO_ON)
    async with admission_on() as admission:
        for i in range(8):  # the small node's slots fill; the big one stays a candidate
            await admit(admission, f"s{i}", small, request=SHORT)
        placed = await admit(admission, "1", big, small, request=conversation("c"))
    assert (placed.status, placed.node) == ("ok", "big")
    assert 0 < placed.expected_s < 100
