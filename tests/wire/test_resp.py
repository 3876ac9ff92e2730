"""The request path's pipelined Redis client against the real Redis (and, for the timeout, a
loopback server that never answers)."""

from __future__ import annotations

import asyncio

import pytest
import redis
from django.conf import settings

from tests.gateways import free_port
from wire.resp import RespClient, RespError, encode

pytestmark = pytest.mark.slow  # real servers and processes

# A Lua loop that keeps Redis busy for about 150 ms, so a call can be caught in flight.
BUSY = (
    "local t = redis.call('TIME') local start = t[1] * 1000000 + t[2] "
    "repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 150000 return 'slow'"
)


def with_db(url: str, db: int) -> str:
    return f"{url}{'&' if '?' in url else '?'}db={db}"


@pytest.fixture
async def resp():
    client = RespClient(settings.REDIS_URL, timeout_s=5)
    yield client
    client.close()


def test_encoding_matches_resp() -> None:
    assert encode(("SET", b"k", 1.5, 7)) == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n1.5\r\n$1\r\n7\r\n"
    )


async def test_concurrent_calls_share_one_connection_and_get_their_own_replies(resp) -> None:
    replies = await asyncio.gather(*(resp.call("ECHO", f"n{i}") for i in range(200)))
    assert replies == [f"n{i}".encode() for i in range(200)]
    conn = resp._conn
    assert conn is not None and not conn.pending
    await resp.call("PING")
    assert resp._conn is conn


async def test_a_cancelled_call_leaves_the_pipeline_in_step(resp) -> None:
    slow = asyncio.ensure_future(resp.call("EVAL", BUSY, 0))
    fast = asyncio.ensure_future(resp.call("ECHO", "after"))
    for _ in range(200):
        if resp._conn is not None and len(resp._conn.pending) == 2:
            break
        await asyncio.sleep(0.005)
    assert resp._conn is not None and len(resp._conn.pending) == 2
    slow.cancel()
    assert await fast == b"after"
    assert slow.cancelled()
    assert await resp.call("ECHO", "next") == b"next"


async def test_error_replies_raise_and_keep_the_connection(resp) -> None:
    with pytest.raises(RespError, match="unknown command"):
        await resp.call("NOSUCHCOMMAND")
    conn = resp._conn
    assert await resp.call("ECHO", "still") == b"still"
    assert resp._conn is conn


async def test_evalsha_reloads_a_flushed_script(resp, redis_client: redis.Redis) -> None:
    script = "return ARGV[1] .. '!'"
    sha = redis_client.script_load(script)
    redis_client.script_flush()
    assert await resp.evalsha(sha, script, [], ["hi"]) == b"hi!"


# Sets KEYS[1] to ARGV[1]: a cancelled call's effect can still be seen.
SETTER = "redis.call('SET', KEYS[1], ARGV[1]) return 1"


async def _cancelled_once_written(resp: RespClient, sha: str, value: str) -> None:
    """An evalsha whose caller is cancelled as soon as its commands are written, as a
    request's closing call is when the end of its answer brings a disconnect."""
    call = asyncio.ensure_future(resp.evalsha(sha, SETTER, ["resp-test:cancelled"], [value]))
    await asyncio.sleep(0)  # the call runs up to its first wait: everything is written
    call.cancel()
    conn = resp._conn
    assert conn is not None
    for _ in range(200):
        if not conn.pending:
            break
        await asyncio.sleep(0.005)
    assert not conn.pending


async def test_a_new_connection_loads_a_script_with_its_first_call(
    resp, redis_client: redis.Redis
) -> None:
    # After a Redis restart its scripts are gone and connections are new: the first call
    # runs even though its caller never reads the reply (no NOSCRIPT left to act on).
    sha = redis_client.script_load(SETTER)
    redis_client.script_flush()
    redis_client.delete("resp-test:cancelled")
    assert await resp.call("PING") == b"PONG"  # connected, no script called on it yet
    await _cancelled_once_written(resp, sha, "first")
    assert redis_client.get("resp-test:cancelled") == b"first"
    redis_client.delete("resp-test:cancelled")


async def test_a_noscript_read_by_nobody_still_reloads_the_script_for_the_next_call(
    resp, redis_client: redis.Redis
) -> None:
    sha = redis_client.script_load(SETTER)
    assert await resp.evalsha(sha, SETTER, ["resp-test:cancelled"], ["loaded"]) == 1
    redis_client.script_flush()
    await _cancelled_once_written(resp, sha, "lost")  # NOSCRIPT, and its caller gone
    assert redis_client.get("resp-test:cancelled") == b"loaded"
    await _cancelled_once_written(resp, sha, "next")
    assert redis_client.get("resp-test:cancelled") == b"next"
    redis_client.delete("resp-test:cancelled")


async def test_a_connection_killed_by_redis_is_replaced(resp, redis_client: redis.Redis) -> None:
    my_id = await resp.call("CLIENT", "ID")
    conn = resp._conn
    assert conn is not None
    redis_client.client_kill_filter(_id=my_id)
    for _ in range(200):
        if conn.closed:
            break
        await asyncio.sleep(0.005)
    assert conn.closed
    assert await resp.call("ECHO", "back") == b"back"
    assert await resp.call("CLIENT", "ID") != my_id


async def test_database_from_the_url_is_selected() -> None:
    client = RespClient(with_db(settings.REDIS_URL, 3))
    try:
        info = await client.call("CLIENT", "INFO")
    finally:
        client.close()
    assert b" db=3 " in info


async def test_unreachable_redis_is_a_resp_error() -> None:
    client = RespClient(f"redis://127.0.0.1:{free_port()}/0", timeout_s=1)
    with pytest.raises(RespError, match="Redis unreachable"):
        await client.call("PING")


async def test_a_redis_that_never_answers_times_out_every_waiting_call() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client hangs up

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = RespClient(f"redis://127.0.0.1:{port}/0", timeout_s=0.2)
    try:
        results = await asyncio.gather(
            client.call("PING"), client.call("PING"), return_exceptions=True
        )
    finally:
        client.close()
        server.close()
    assert all(isinstance(r, RespError) and "did not answer" in str(r) for r in results)


async def test_a_subscription_hands_over_messages_and_still_answers_calls(
    redis_client: redis.Redis,
) -> None:
    pushed: list[list[object]] = []
    conn = await RespClient(settings.REDIS_URL).subscribe("clawdbot:freed:*", pushed.append)
    try:
        redis_client.publish("clawdbot:freed:gpu1", "x")
        # A published message arriving before the ping's reply is not taken for it.
        assert await conn.call(encode(("PING",)), conn.loop) == [b"pong", b""]
        assert pushed == [[b"pmessage", b"clawdbot:freed:*", b"clawdbot:freed:gpu1", b"x"]]
        assert conn.lost is not None and not conn.lost.done()
        conn.fail(RespError("closing"))
        assert conn.lost.done()
    finally:
        conn.fail(RespError("closing"))
