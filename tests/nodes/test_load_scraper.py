"""The server-load scrape against simulator processes of each kind: the hash it stores in
Redis, and how it bears a /metrics that is slow, gone or missing."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
import redis

from clawdbot_site import redis_keys
from nodes import server_load_store
from nodes.load_scraper import Target, scrape_and_store
from nodes.server_load import ServerLoad
from nodes.tasks import scrape_server_load
from tests.simulators import SimProcess

SLOW_DECODE = ("--decode-ms", "400", "--answer-tokens", "50", "--context-length", "1000")


def hash_of(client: redis.Redis, node: str) -> dict[str, str]:
    raw: dict[bytes, bytes] = client.hgetall(redis_keys.server_load(node))  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items()}


@pytest.mark.django_db
def test_the_task_stores_running_waiting_and_kv_of_a_busy_node(
    simulator: Callable[..., SimProcess],
    make_node: Callable[..., object],
    redis_client: redis.Redis,
) -> None:
    sim = simulator(
        "--api", "openai", "--server-kind", "sglang", "--model", "m", "--parallel", "1",
        *SLOW_DECODE,
    )  # fmt: skip
    make_node("sg1", base_url=sim.url, api_kind="openai", server_kind="sglang")
    make_node("ol1", base_url=sim.url, api_kind="ollama")  # no gauges: never asked
    body = {"model": "m", "messages": [{"role": "user", "content": "hi " * 40}], "stream": True}
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", sim.url + "/v1/chat/completions", json=body) as stream,
    ):
        # Held while scraping: a dropped iterator would close the stream, and the node would
        # stop generating at once.
        events = stream.iter_lines()
        next(events)  # the first event: prefill is done, decoding runs
        before_ms = int(time.time() * 1000)
        assert scrape_server_load() == 1
        stored = hash_of(redis_client, "sg1")
    assert (stored["running"], stored["waiting"], stored["stale"]) == ("1", "0", "0")
    # The prompt's tokens and the first ones generated, in a cache of 1 slot x 1000 tokens.
    assert 0.02 < float(stored["kv"]) < 0.5
    assert int(stored["at"]) >= before_ms
    assert 0 < redis_client.pttl(redis_keys.server_load("sg1")) <= 15_000
    assert not redis_client.exists(redis_keys.server_load("ol1"))
    assert server_load_store.latest(["sg1"])["sg1"] == {
        "running": 1,
        "waiting": 0,
        "kv": float(stored["kv"]),
        "at": int(stored["at"]),
        "stale": False,
    }


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["vllm", "llamacpp", "tgi"])
def test_an_idle_node_of_each_kind_reads_zero(
    simulator: Callable[..., SimProcess], redis_client: redis.Redis, kind: str
) -> None:
    sim = simulator("--api", "openai", "--server-kind", kind, "--model", "m", "--zero-latency")
    done = httpx.post(
        sim.url + "/v1/completions", json={"model": "m", "prompt": "hello"}, timeout=10
    )
    assert done.status_code == 200
    [scraped] = scrape_and_store([Target("n", sim.url, kind)], timeout_s=2)
    assert scraped.load == ServerLoad(running=0, waiting=0, kv=None if kind == "tgi" else 0.0)
    stored = hash_of(redis_client, "n")
    assert (stored["running"], stored["waiting"]) == ("0", "0")
    assert ("kv" in stored) is (kind != "tgi")


def test_a_slow_metrics_keeps_the_last_values_marked_stale(
    simulator: Callable[..., SimProcess], redis_client: redis.Redis, settings: object
) -> None:
    sim = simulator(
        "--api", "openai", "--server-kind", "vllm", "--model", "m", "--metrics-delay-ms", "5000"
    )
    server_load_store.publish("v1", ServerLoad(running=3, waiting=9, kv=0.8), at_ms=1_000)
    started = time.monotonic()
    [scraped] = scrape_and_store([Target("v1", sim.url, "vllm")], timeout_s=0.3)
    # Well under the server's 5 s: the scrape gave up at its timeout, it did not wait.
    assert time.monotonic() - started < 4.5, "the scrape waited for the slow server"
    assert scraped.error == "GET /metrics timed out"
    stored = hash_of(redis_client, "v1")
    assert stored == {"running": "3", "waiting": "9", "kv": "0.8", "at": "1000", "stale": "1"}
    # Its expiry still counts from the last good scrape: stale values do not live on.
    assert 0 < redis_client.pttl(redis_keys.server_load("v1")) <= 15_000


def test_a_server_gone_or_without_gauges(
    simulator: Callable[..., SimProcess], redis_client: redis.Redis
) -> None:
    # Connection refused, with nothing stored before: nothing is made up.
    [gone] = scrape_and_store([Target("g", "http://127.0.0.1:9", "vllm")], timeout_s=1)
    assert gone.error.startswith("GET /metrics failed")
    assert not redis_client.exists(redis_keys.server_load("g"))
    # A server with no /metrics (a llama-server without --metrics, a wrong kind): no hash.
    generic = simulator("--api", "openai", "--server-kind", "openai", "--model", "m")
    server_load_store.publish("l", ServerLoad(running=1, waiting=0, kv=0.1), at_ms=1)
    [absent] = scrape_and_store([Target("l", generic.url, "llamacpp")], timeout_s=2)
    assert absent.absent and absent.load is None
    assert not redis_client.exists(redis_keys.server_load("l"))
