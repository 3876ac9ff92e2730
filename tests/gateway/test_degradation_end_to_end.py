"""Degradation tiers end to end: a real gateway process with a short window, simulator nodes
whose faults drive the cluster's error rate up and down, the official openai client reading
what each tier answers, /metrics and /readyz saying where the tier is, and the TierChange
rows the change leaves.

The error rate is set with two load profiles: `load` on a healthy node and `load-bad` on a
node injecting failures, so a phase sends exactly the share of failures it wants. The tested
profile `qwen3-32b` (falling back to `qwen2-7b`) sits on nodes of its own."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import redis
from django.conf import settings
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from clawdbot_site import redis_keys
from gateway import response_cache, tasks
from gateway.models import ApiKey, RequestLog, TierChange
from gateway.services import apikey_create
from nodes.models import ModelProfile
from tests.conftest import clean_gateway_state
from tests.gateway.world import add_node
from tests.gateways import GatewayProcess
from tests.simulators import SimProcess

pytestmark = pytest.mark.slow  # real servers and processes

WINDOW_S = 5
TIERS = {
    "CLAWDBOT_TIER_ENABLED": "true",
    "CLAWDBOT_TIER_WINDOW_S": str(WINDOW_S),
    # Each phase sends 40 requests or more: a tick in the middle of one cannot judge it early.
    "CLAWDBOT_TIER_MIN_REQUESTS": "40",
    "CLAWDBOT_TIER_MIN_DWELL_S": "0.5",
    "CLAWDBOT_CACHE_WARM_AT": "0",  # store every answer: the cache tests prime it at will
    "CLAWDBOT_EJECT_AFTER": "1000000",  # failing nodes stay in: their failures set the rate
}
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]
BUSY = "We are very busy right now; please try again in a minute."


def sim_args(model: str, *faults: str) -> tuple[str, ...]:
    return ("--api", "ollama", "--model", model, "--zero-latency", *faults)


@pytest.fixture(scope="module")
def tier_gateway(django_db_setup: None) -> Iterator[GatewayProcess]:
    process = GatewayProcess(TIERS)
    yield process
    process.stop()


@dataclass
class Cluster:
    gateway: GatewayProcess
    key: str
    other_key: str
    primary: SimProcess  # qwen3-32b
    fallback: SimProcess  # qwen2-7b
    bad: SimProcess  # load-bad: fails every request until told otherwise

    @property
    def base_url(self) -> str:
        return self.gateway.url + "/v1"

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=key or self.key, max_retries=0)

    def post(
        self,
        model: str,
        body: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        return httpx.post(
            self.base_url + "/chat/completions",
            headers={"authorization": f"Bearer {key or self.key}", **(headers or {})},
            json={"model": model, "messages": HELLO, **(body or {})},
            timeout=20,
        )


def readyz(gateway: GatewayProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(gateway.url + "/readyz", timeout=5).json()
    return body


def metric(gateway: GatewayProcess, name: str) -> float:
    for line in httpx.get(gateway.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def poll(condition: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)  # bounded poll of an observable condition
    raise AssertionError(f"not reached within {timeout_s} s: {what}")


def quiet(gateway: GatewayProcess) -> None:
    """A fresh degradation state: no tier, nothing in the window, an empty cache."""
    client = redis.Redis.from_url(settings.REDIS_URL)

    def fresh() -> bool:
        clean_gateway_state(client)  # counts the process pushes meanwhile go too
        body = readyz(gateway)
        return body.get("tier") == 0 and body.get("window_requests") == 0

    try:
        poll(fresh, "tier 0 with an empty window")
    finally:
        client.close()


@pytest.fixture
def cluster(
    tier_gateway: GatewayProcess, transactional_db: None, simulator: Callable[..., SimProcess]
) -> Cluster:
    primary = simulator(*sim_args("qwen3:32b"))
    fallback = simulator(*sim_args("qwen2:7b"))
    good, bad = (
        simulator(*sim_args("qwen3:32b")),
        simulator(*sim_args("qwen3:32b", "--error-rate", "1.0")),
    )
    small = ModelProfile.objects.create(
        model_id="qwen2-7b", upstream_model="qwen2:7b", context_window=8192, max_output_tokens=256
    )
    big = ModelProfile.objects.create(
        model_id="qwen3-32b",
        upstream_model="qwen3:32b",
        context_window=8192,
        max_output_tokens=256,
        fallback=small,
        degraded_answer=BUSY,
    )
    add_node(big, "primary", primary)
    add_node(small, "fallback", fallback)
    for model_id, name, sim in (("load", "good", good), ("load-bad", "bad", bad)):
        profile = ModelProfile.objects.create(
            model_id=model_id, upstream_model="qwen3:32b", context_window=8192, max_output_tokens=64
        )
        add_node(profile, name, sim)
    key, other = apikey_create(name="tiers").secret, apikey_create(name="other").secret
    tier_gateway.wait_for_config()
    quiet(tier_gateway)
    TierChange.objects.all().delete()  # recorded by an earlier test after its flush
    return Cluster(tier_gateway, key, other, primary, fallback, bad)


def drive(cluster: Cluster, *, ok: int, failed: int) -> None:
    """Requests of the load profiles: `ok` answered by the healthy node, `failed` failed by
    the faulty one (500 from the node, or 503 once tier 3 says the model is unavailable).
    The failures are spread evenly, so a tick in the middle reads about the same share."""
    total = ok + failed
    for i in range(total):
        if (i + 1) * failed // total > i * failed // total:
            assert cluster.post("load-bad").status_code in (500, 503)
        else:
            assert cluster.post("load").status_code == 200


def enter(cluster: Cluster, tier: int, *, ok: int, failed: int) -> None:
    drive(cluster, ok=ok, failed=failed)
    poll(lambda: readyz(cluster.gateway)["tier"] == tier, f"tier {tier}")
    assert metric(cluster.gateway, "clawdbot_degradation_tier") == tier


def leave(cluster: Cluster) -> None:
    """The faults stop: the bad node answers again, and traffic goes on until tier 0."""
    cluster.bad.control(error_rate=0.0)

    def normal() -> bool:
        drive(cluster, ok=2, failed=0)
        assert cluster.post("load-bad").status_code == 200
        return readyz(cluster.gateway)["tier"] == 0

    poll(normal, "back to tier 0", timeout_s=WINDOW_S + 15)
    assert metric(cluster.gateway, "clawdbot_degradation_tier") == 0
    assert metric(cluster.gateway, "clawdbot_cluster_error_rate") < 0.03
    cluster.bad.control(error_rate=1.0)
    quiet(cluster.gateway)  # the next phase starts from an empty window


def changes() -> list[tuple[int, int]]:
    return [(c.from_tier, c.to_tier) for c in TierChange.objects.order_by("at", "pk")]


def logged(request_id: str) -> RequestLog:
    def flushed() -> bool:
        tasks.flush_request_logs()
        return RequestLog.objects.filter(request_id=request_id).exists()

    poll(flushed, f"request log row {request_id}")
    return RequestLog.objects.get(request_id=request_id)


def test_each_tier_is_entered_and_left_as_node_faults_come_and_go(cluster: Cluster) -> None:
    gateway = cluster.gateway
    assert readyz(gateway)["tier"] == 0
    # 4 failures in 40 requests: 10 %, tier 1 (5 % and up).
    enter(cluster, 1, ok=36, failed=4)
    assert 0.05 <= metric(gateway, "clawdbot_cluster_error_rate") < 0.15
    poll(lambda: changes() == [(0, 1)], "the change to tier 1 recorded")
    row = TierChange.objects.get()
    assert row.requests >= 40 and row.failures == 4 and 0.05 <= row.error_rate < 0.15
    leave(cluster)
    # 8 in 40: 20 %, tier 2 (15 % and up).
    enter(cluster, 2, ok=32, failed=8)
    leave(cluster)
    # 20 in 40: 50 %, tier 3 (30 % and up).
    enter(cluster, 3, ok=20, failed=20)
    leave(cluster)
    recorded = changes()
    assert [c for c in recorded if c[1] > c[0]] == [(0, 1), (0, 2), (0, 3)]
    assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(recorded))
    assert recorded[-1][1] == 0
    # Leaving went down through the tiers the falling rate passed (or straight to 0).
    assert all(c[1] < c[0] for c in recorded if c not in [(0, 1), (0, 2), (0, 3)])


def stored(cluster: Cluster, key: str, model: str, body: dict[str, Any]) -> bool:
    """Whether the cache holds the answer to this request by this key (the gateway stores it
    after the answer went out)."""
    key_id = ApiKey.objects.get(prefix=key.split("-")[1]).pk
    digest = response_cache.digest(
        profile=model, endpoint="chat", body={"model": model, **body}, key_id=str(key_id)
    )
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return bool(client.exists(redis_keys.cache_entry(digest)))
    finally:
        client.close()


def test_tier_1_answers_a_failed_request_from_the_cache_plain_or_streamed(
    cluster: Cluster,
) -> None:
    asked = {"messages": HELLO, "temperature": 0.0}
    primed = cluster.client().chat.completions.create(model="qwen3-32b", **asked)  # type: ignore[call-overload]
    private = {"messages": [{"role": "user", "content": "My secret"}], "temperature": 0.0}
    sent = cluster.post("qwen3-32b", private, headers={"cache-control": "no-store"})
    assert sent.status_code == 200
    another = {"messages": [{"role": "user", "content": "Something else"}]}
    assert cluster.post("qwen3-32b", another).status_code == 200
    # Stores go out in order after each answer: once the last is in, the others were done.
    poll(lambda: stored(cluster, cluster.key, "qwen3-32b", another), "the answer cached")
    assert stored(cluster, cluster.key, "qwen3-32b", asked)
    assert not stored(cluster, cluster.key, "qwen3-32b", private), "no-store is never stored"
    # 6 failures in 89 requests: 6.7 %, tier 1; the 5 failing requests below keep it under
    # 15 % (11 in 94).
    enter(cluster, 1, ok=80, failed=6)
    cluster.primary.control(error_rate=1.0)  # the node of qwen3-32b fails from now on

    raw = cluster.client().chat.completions.with_raw_response.create(model="qwen3-32b", **asked)  # type: ignore[call-overload]
    answer = raw.parse()
    assert raw.status_code == 200 and raw.headers["x-clawdbot-cache"] == "hit"
    assert "x-clawdbot-node" not in raw.headers
    assert answer.choices[0].message.content == primed.choices[0].message.content
    assert answer.model == "qwen3-32b" and answer.id != primed.id

    streamed = cluster.client().chat.completions.with_raw_response.create(
        model="qwen3-32b", stream=True, stream_options={"include_usage": True}, **asked
    )  # type: ignore[call-overload]
    assert streamed.headers["x-clawdbot-cache"] == "hit"
    chunks: list[ChatCompletionChunk] = []
    with streamed.parse() as stream:
        chunks.extend(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == primed.choices[0].message.content
    assert chunks[-1].usage is not None and primed.usage is not None
    assert chunks[-1].usage.completion_tokens == primed.usage.completion_tokens

    # No answer stands in for a request whose answer was not stored, or not by this key, or
    # with other sampling parameters: the node's failure is the answer.
    for response in (
        cluster.post("qwen3-32b", private),
        cluster.post("qwen3-32b", asked, key=cluster.other_key),
        cluster.post("qwen3-32b", {**asked, "temperature": 0.5}),
    ):
        assert response.status_code == 500 and "x-clawdbot-cache" not in response.headers
    assert readyz(cluster.gateway)["tier"] == 1
    row = logged(raw.headers["x-request-id"])
    assert (row.status, row.degraded, row.node, row.served_model) == (200, "cache", "", "qwen3-32b")


def test_tier_2_sends_requests_to_the_fallback_profile(cluster: Cluster) -> None:
    enter(cluster, 2, ok=32, failed=8)  # 20 %
    raw = cluster.client().chat.completions.with_raw_response.create(
        model="qwen3-32b", messages=HELLO
    )
    answer = raw.parse()
    assert raw.headers["x-model-downgraded"] == "qwen2-7b"
    assert raw.headers["x-clawdbot-node"] == "fallback"
    assert answer.model == "qwen2-7b" and answer.choices[0].message.content
    assert [
        r["body"]["model"] for r in cluster.fallback.requests() if r["path"] == "/api/chat"
    ] == ["qwen2:7b"]
    assert not [r for r in cluster.primary.requests() if r["path"] == "/api/chat"]
    streamed = cluster.client().chat.completions.with_raw_response.create(
        model="qwen3-32b", messages=HELLO, stream=True
    )
    assert streamed.headers["x-model-downgraded"] == "qwen2-7b"
    with streamed.parse() as stream:
        assert {c.model for c in stream} == {"qwen2-7b"}
    # A profile without a fallback is served as asked.
    plain = cluster.post("load")
    assert plain.status_code == 200 and "x-model-downgraded" not in plain.headers
    row = logged(raw.headers["x-request-id"])
    assert (row.model, row.served_model, row.degraded) == ("qwen3-32b", "qwen2-7b", "downgraded")


def test_tier_3_answers_failures_with_the_static_answer_or_503(cluster: Cluster) -> None:
    enter(cluster, 3, ok=20, failed=20)  # 50 %
    # Requests still go to the nodes first: one that answers is answered.
    healthy = cluster.post("load")
    assert healthy.status_code == 200 and "x-clawdbot-degraded" not in healthy.headers
    cluster.primary.control(error_rate=1.0)
    cluster.fallback.control(error_rate=1.0)  # tier 3 downgrades too: both fail
    raw = cluster.client().chat.completions.with_raw_response.create(
        model="qwen3-32b", messages=HELLO
    )
    answer = raw.parse()
    assert raw.status_code == 200 and raw.headers["x-clawdbot-degraded"] == "static"
    assert "x-model-downgraded" not in raw.headers
    assert answer.choices[0].message.content == BUSY and answer.model == "qwen3-32b"
    assert answer.usage is not None and answer.usage.total_tokens == 0
    streamed = cluster.client().chat.completions.with_raw_response.create(
        model="qwen3-32b", messages=HELLO, stream=True
    )
    assert streamed.headers["x-clawdbot-degraded"] == "static"
    with streamed.parse() as stream:
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == BUSY
    # Without a static answer, or set to answer 503: 503 with Retry-After, never a 200 error.
    small = ModelProfile.objects.get(model_id="qwen2-7b")
    small.degraded_answer, small.degraded_mode = "Fallback busy.", "unavailable"
    small.save()
    cluster.gateway.wait_for_config()
    for model in ("load-bad", "qwen2-7b"):
        refused = cluster.post(model)
        assert refused.status_code == 503, refused.text
        assert refused.headers["x-clawdbot-degraded"] == "unavailable"
        assert 1 <= int(refused.headers["retry-after"]) <= 120
        error = refused.json()["error"]
        assert error["code"] == "service_unavailable" and "tier 3" in error["message"]
    row = logged(raw.headers["x-request-id"])
    assert (row.status, row.degraded, row.node) == (200, "static", "")
