"""Every /v1 request leaves a request-log row, metrics and an x-request-id, whatever stopped
it; /metrics survives anything a client sends or Redis holds; and a gateway that cannot load
its configuration still answers in the OpenAI error shape."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import cast

import httpx
import orjson
import pytest

from clawdbot_site import redis_keys
from clawdbot_site.redis_client import sync_client
from gateway import metrics, tasks
from gateway.models import RequestLog
from gateway.request_log import BUFFER
from tests.gateway.world import World, build
from tests.gateways import GatewayProcess
from tests.simulators import SimProcess

pytestmark = pytest.mark.slow  # real servers and processes

FAST = ("--api", "ollama", "--model", "qwen3:32b", "--zero-latency")
HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.fixture
def world(gateway: GatewayProcess, simulator: Callable[..., SimProcess]) -> World:
    return build(gateway, {"gpu1": simulator(*FAST)})


def chat(world: World, model: str = "qwen3-32b", key: str | None = None) -> httpx.Response:
    return httpx.post(
        world.base_url + "/chat/completions",
        headers=world.headers(key),
        json={"model": model, "messages": HELLO},
        timeout=20,
    )


def logged(request_ids: set[str], timeout_s: float = 10.0) -> dict[str, RequestLog]:
    """The request-log rows of these requests, once the gateway has buffered all of them
    (it records a request just after answering it)."""
    client = sync_client()
    deadline = time.monotonic() + timeout_s
    buffered: set[str] = set()
    while time.monotonic() < deadline:
        buffered = {orjson.loads(raw)["request_id"] for raw in client.lrange(BUFFER, 0, -1)}
        if request_ids <= buffered:
            break
        time.sleep(0.02)  # bounded poll of the Redis buffer
    assert request_ids <= buffered, f"never buffered: {request_ids - buffered}"
    tasks.flush_request_logs()
    return {row.request_id: row for row in RequestLog.objects.all()}


def request_id(response: httpx.Response) -> str:
    value = response.headers.get("x-request-id", "")
    assert value.startswith("req-"), f"{response.status_code} without x-request-id"
    return value


def metrics_text(gateway: GatewayProcess) -> str:
    response = httpx.get(gateway.url + "/metrics", timeout=10)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def test_requests_stopped_before_the_proxy_are_logged_with_a_request_id(
    world: World,
) -> None:
    base, headers = world.base_url, world.headers()
    too_large = b'{"model": "qwen3-32b", "input": "' + b"x" * (11 * 1024 * 1024) + b'"}'
    answers = {
        "wrong method": httpx.get(base + "/chat/completions", headers=headers),
        "too large": httpx.post(base + "/embeddings", headers=headers, content=too_large),
        "unknown url": httpx.post(base + "/nope", headers=headers, json={}),
        "list, bad key": httpx.get(base + "/models", headers=world.headers("ck-aaaaaaaa-bad")),
        "list": httpx.get(base + "/models", headers=headers),
        "card": httpx.get(base + "/models/qwen3-32b", headers=headers),
        "no card": httpx.get(base + "/models/nope", headers=headers),
        "models, wrong method": httpx.post(base + "/models", headers=headers, json={}),
    }
    statuses = {what: r.status_code for what, r in answers.items()}
    assert statuses == {
        "wrong method": 405,
        "too large": 413,
        "unknown url": 404,
        "list, bad key": 401,
        "list": 200,
        "card": 200,
        "no card": 404,
        "models, wrong method": 405,
    }
    # Not API requests: never logged.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(world.gateway.url + path).status_code == 200
    ids = {what: request_id(r) for what, r in answers.items()}
    assert len(set(ids.values())) == len(ids)

    rows = logged(set(ids.values()))
    assert set(rows) == set(ids.values()), "one row per API request, none for the probes"
    row = {what: rows[rid] for what, rid in ids.items()}
    assert {what: r.status for what, r in row.items()} == statuses
    assert row["wrong method"].endpoint == "chat"
    assert row["wrong method"].error_code == "method_not_allowed"
    assert row["too large"].endpoint == "embeddings"
    assert row["too large"].error_code == "request_too_large"
    assert row["too large"].key_prefix == row["list"].key_prefix != ""
    assert row["list, bad key"].error_code == "invalid_api_key"
    assert row["list, bad key"].key_prefix == ""
    assert row["card"].endpoint == "models" and row["card"].served_model == "qwen3-32b"
    assert row["no card"].error_code == "model_not_found" and row["no card"].model == "nope"
    assert all(r.attempts == 0 and r.node == "" for r in rows.values())

    text = metrics_text(world.gateway)
    assert 'clawdbot_requests_total{model="-",node="-",status="405"} 2.0' in text
    assert 'clawdbot_requests_total{model="-",node="-",status="413"} 1.0' in text
    assert 'clawdbot_requests_total{model="-",node="-",status="401"} 1.0' in text
    assert 'clawdbot_requests_total{model="qwen3-32b",node="-",status="200"} 1.0' in text


def test_requests_that_reached_no_node_show_no_attempts(world: World) -> None:
    answers = [
        chat(world, key="ck-aaaaaaaa-bad"),
        chat(world, model="nope"),
        httpx.post(world.base_url + "/chat/completions", headers=world.headers(), content=b"{"),
        chat(world),
    ]
    assert [r.status_code for r in answers] == [401, 404, 400, 200]
    rows = logged({request_id(r) for r in answers})
    attempts = [(rows[request_id(r)].status, rows[request_id(r)].attempts) for r in answers]
    assert attempts == [(401, 0), (404, 0), (400, 0), (200, 1)]


def test_a_model_name_cannot_break_or_bloat_the_metrics(world: World) -> None:
    assert chat(world).status_code == 200
    strange = ["x\x1fy", "a\x1fb\x1fc", *(f"made-up-{i}" for i in range(3))]
    refused = [chat(world, model=model) for model in strange]
    assert [r.status_code for r in refused] == [404] * len(strange)

    text = metrics_text(world.gateway)
    assert 'clawdbot_requests_total{model="qwen3-32b",node="gpu1",status="200"} 1.0' in text
    assert f'clawdbot_requests_total{{model="-",node="-",status="404"}} {len(strange)}.0' in text
    assert "made-up" not in text and "\x1f" not in text
    client = sync_client()
    models = cast(set[bytes], client.smembers(metrics.MODELS))
    assert models == {b"qwen3-32b", b"-"}, "only profiles, and - for none"
    # The request log keeps what the client asked for.
    rows = logged({request_id(r) for r in refused})
    assert sorted(rows[request_id(r)].model for r in refused) == sorted(strange)
    assert all(rows[request_id(r)].served_model == "" for r in refused)


def test_metrics_skip_malformed_stored_fields(world: World) -> None:
    assert chat(world).status_code == 200
    client = sync_client()
    client.hset(metrics.REQUESTS, "no separator", 1)
    client.hset(metrics.REQUESTS, "a\x1fb\x1fc\x1fd", 1)
    client.hset(metrics.REQUESTS, "m\x1fn\x1f200", "not a number")
    client.hset(metrics.TOKENS, "no separator", 5)
    client.sadd(metrics.MODELS, "broken", b"\xff\xfe")
    client.hset(metrics.HISTOGRAMS["duration"] + "broken", mapping={"0.005": "x", "sum": "y"})

    text = metrics_text(world.gateway)
    assert "clawdbot_router_up 1.0" in text
    assert 'clawdbot_requests_total{model="qwen3-32b",node="gpu1",status="200"} 1.0' in text
    assert 'clawdbot_request_duration_seconds_count{model="qwen3-32b"} 1.0' in text
    assert "no separator" not in text and 'model="m"' not in text


@pytest.fixture
def gateway_without_database() -> Iterator[GatewayProcess]:
    # Port 1: nothing listens there, so every connection attempt is refused at once.
    gateway = GatewayProcess({"DATABASE_URL": "postgres://nobody@127.0.0.1:1/none"})
    yield gateway
    gateway.stop()


def test_a_gateway_that_cannot_load_its_config_answers_openai_errors(
    gateway_without_database: GatewayProcess,
) -> None:
    url = gateway_without_database.url
    headers = {"authorization": "Bearer ck-aaaaaaaa-whatever"}
    answers = [
        httpx.get(url + "/v1/models", headers=headers),
        httpx.get(url + "/v1/models/qwen3-32b", headers=headers),
        httpx.post(url + "/v1/chat/completions", headers=headers, json={}),
        httpx.get(url + "/metrics"),
    ]
    for response in answers:
        assert response.status_code == 503, (response.request.url, response.text[:200])
        assert response.headers["content-type"] == "application/json"
        assert int(response.headers["retry-after"]) >= 1
        error = response.json()["error"]
        assert error["type"] == "server_error" and error["code"] == "service_unavailable"
        assert "configuration" in error["message"] and "Traceback" not in error["message"]
    assert httpx.get(url + "/healthz").status_code == 200


# --- nothing a client sends may stop the request log (PostgreSQL refuses NUL in text) ---


def test_a_nul_byte_in_a_client_string_is_logged_and_logging_goes_on(world: World) -> None:
    headers = world.headers()
    nul_path = httpx.get(world.base_url + "/models/%00", headers=headers, timeout=10)
    nul_body = httpx.post(
        world.base_url + "/chat/completions",
        headers=headers,
        json={"model": "qwen3\x00-32b", "messages": HELLO},
        timeout=10,
    )
    after = chat(world)
    assert (nul_path.status_code, nul_body.status_code, after.status_code) == (404, 404, 200)
    ids = {request_id(nul_path), request_id(nul_body), request_id(after)}
    rows = logged(ids)
    assert ids <= rows.keys()
    assert rows[request_id(nul_body)].model == "qwen3-32b"  # the NUL dropped, the rest kept
    assert sync_client().llen(BUFFER) == 0


def test_an_entry_the_database_refuses_is_set_aside_and_the_rest_flow(
    gateway: GatewayProcess,
) -> None:
    client = sync_client()
    good = [_entry(f"req-good-{i}") for i in range(3)]
    poison = [
        _entry("req-status-out-of-range", status=70_000),  # smallint: DataError
        _entry("req-negative-count", prompt_tokens=-5),  # CHECK constraint: IntegrityError
        b"not json at all",
        orjson.dumps({"request_id": "req-no-time"}),
    ]
    client.rpush(BUFFER, good[0], poison[0], good[1], poison[1], poison[2], poison[3], good[2])
    before = int(client.get(redis_keys.METRIC_LOG_REJECTED) or 0)
    assert tasks.flush_request_logs() == 3
    stored = set(RequestLog.objects.values_list("request_id", flat=True))
    assert {"req-good-0", "req-good-1", "req-good-2"} <= stored
    assert not stored & {"req-status-out-of-range", "req-negative-count"}
    assert client.llen(BUFFER) == 0, "nothing holds the buffer back"
    assert sorted(client.lrange(redis_keys.REQUEST_LOG_REJECTED, 0, -1)) == sorted(poison)
    assert int(client.get(redis_keys.METRIC_LOG_REJECTED) or 0) == before + 4
    assert f"clawdbot_request_log_rejected_total {before + 4}.0" in metrics_text(gateway)
    # A second flush finds nothing to do, and new entries flow.
    client.rpush(BUFFER, _entry("req-good-3"))
    assert tasks.flush_request_logs() == 1


def test_an_outage_keeps_entries_in_the_buffer(
    gateway: GatewayProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import OperationalError

    def down(*args: object, **kwargs: object) -> None:
        raise OperationalError("connection refused")

    client = sync_client()
    client.rpush(BUFFER, _entry("req-during-outage"))
    monkeypatch.setattr(RequestLog.objects, "bulk_create", down)
    with pytest.raises(OperationalError):
        tasks.flush_request_logs()
    assert client.llen(BUFFER) == 1 and client.llen(redis_keys.REQUEST_LOG_REJECTED) == 0
    monkeypatch.undo()
    assert tasks.flush_request_logs() == 1


def _entry(request_id: str, **fields: object) -> bytes:
    entry = {
        "request_id": request_id,
        "ts": time.time(),
        "endpoint": "chat",
        "key_prefix": "",
        "model": "m",
        "served_model": "m",
        "node": "gpu1",
        "status": 200,
        "stream": False,
        "latency_ms": 1.0,
        "ttft_ms": None,
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "attempts": 1,
        "error_code": "",
        "error_message": "",
        "prompt_truncated": False,
    }
    return orjson.dumps({**entry, **fields})
