"""Scale-out: two real gateway processes on one Redis and one database, with simulator nodes
as processes. A key's rate limit and a node's concurrency and queue hold across both;
/metrics from either counts the traffic of both; a config change made through one process's
admin reaches the other within a second; and killing one process mid-load loses no request
log of the other, flushed by a real Celery worker. `make scale-test` runs this module with
tests/test_supervisor.py (`clawdbot serve --workers N` itself)."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User

from gateway import tasks
from gateway.models import ApiKey, RequestLog
from gateway.services import apikey_create
from tests.gateway.world import HELLO, World, build
from tests.gateways import GatewayProcess
from tests.simulators import SimProcess
from tests.workers import CeleryProcess

pytestmark = pytest.mark.slow  # real servers and processes

FAST = ("--api", "ollama", "--model", "qwen3:32b", "--zero-latency")
# A node that takes its time: one token per --decode-ms on an A10, the model already loaded.
SLOW = ("--api", "ollama", "--model", "qwen3:32b", "--gpu-type", "A10", "--preloaded")
PROPAGATION_LIMIT_S = 1.0


@pytest.fixture(scope="module")
def other_gateway(django_db_setup: None) -> Iterator[GatewayProcess]:
    """The second gateway process, beside the session's `gateway`."""
    process = GatewayProcess()
    yield process
    process.stop()


@pytest.fixture
def both(gateway: GatewayProcess, other_gateway: GatewayProcess) -> list[GatewayProcess]:
    return [gateway, other_gateway]


def chat(gw: GatewayProcess, key: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "qwen3-32b", "messages": HELLO, **extra},
        timeout=20,
    )


def in_turn(
    both: list[GatewayProcess], count: int, send: Callable[[GatewayProcess], httpx.Response]
) -> list[httpx.Response]:
    """`count` requests at once, alternating between the two processes."""
    with ThreadPoolExecutor(max_workers=min(count, 16)) as pool:
        return list(pool.map(lambda i: send(both[i % 2]), range(count)))


def poll(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Wait for an observable condition; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(0.01)  # bounded poll of an observable condition
    raise AssertionError(f"not within {timeout_s} s: {what}")


def metric_samples(gw: GatewayProcess) -> dict[str, float]:
    samples = {}
    for line in httpx.get(gw.url + "/metrics", timeout=5).text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            samples[series] = float(value)
    return samples


def total(samples: dict[str, float], prefix: str, label: str = "") -> float:
    return sum(v for s, v in samples.items() if s.startswith(prefix) and label in s)


# --- (a) a key's rate limit ---


def test_a_requests_per_minute_limit_holds_across_both_processes(
    both: list[GatewayProcess], simulator: Callable[..., SimProcess]
) -> None:
    world = build(both[0], {"gpu1": simulator(*FAST)}, key_fields={"rpm_limit": 10})
    both[1].wait_for_config()
    # Two each in turn, so both processes admit some; then 26 at once through both.
    first = [chat(both[i % 2], world.key).status_code for i in range(4)]
    assert first == [200, 200, 200, 200]
    burst = [r.status_code for r in in_turn(both, 26, lambda gw: chat(gw, world.key))]
    assert burst.count(200) == 6, burst
    assert burst.count(429) == 20, burst


# --- (b) a node's concurrency and queue ---


def test_node_concurrency_and_queue_hold_across_both_processes(
    both: list[GatewayProcess], simulator: Callable[..., SimProcess]
) -> None:
    # About a second per answer (25 tokens at 40 ms); the node itself could run 16 at once.
    sim = simulator(*SLOW, "--decode-ms", "40", "--parallel", "16")
    world = build(
        both[0], {"gpu1": sim}, node_fields={"gpu1": {"max_concurrent": 2, "queue_size": 2}}
    )
    both[1].wait_for_config()
    answers = in_turn(both, 8, lambda gw: chat(gw, world.key, max_tokens=25))
    # Two run, two wait for their slots (through whichever process), four find the queue full.
    assert sorted(a.status_code for a in answers) == [200] * 4 + [503] * 4
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 503} == {
        "service_unavailable"
    }
    stats = sim.stats()
    assert stats["max_running_seen"] == 2, "never more than max_concurrent at the node"
    assert stats["max_queued_seen"] == 0, "the gateway queued; the node never had to"
    assert stats["requests_by_path"]["/api/chat"] == 4


# --- (c) /metrics ---


def test_metrics_from_either_process_count_the_traffic_of_both(
    both: list[GatewayProcess], simulator: Callable[..., SimProcess]
) -> None:
    world = build(both[0], {"gpu1": simulator(*FAST)})
    both[1].wait_for_config()
    ok = in_turn(both, 24, lambda gw: chat(gw, world.key, max_tokens=3))
    missing = in_turn(both, 4, lambda gw: chat(gw, world.key, model="nope"))
    assert [a.status_code for a in ok] == [200] * 24
    assert [a.status_code for a in missing] == [404] * 4
    completion = sum(a.json()["usage"]["completion_tokens"] for a in ok)
    # Each request is counted by the script that closes it, after its answer went out.
    poll(
        lambda: total(metric_samples(both[0]), "clawdbot_requests_total") == 28,
        10,
        "28 requests counted",
    )
    a, b = metric_samples(both[0]), metric_samples(both[1])
    assert a == b, "every process renders the cluster's numbers"
    assert a['clawdbot_requests_total{model="qwen3-32b",node="gpu1",status="200"}'] == 24
    assert total(a, "clawdbot_requests_total", 'status="404"') == 4
    assert a['clawdbot_request_duration_seconds_count{model="qwen3-32b"}'] == 24
    assert a['clawdbot_tokens_total{kind="completion",model="qwen3-32b"}'] == completion
    assert a['clawdbot_node_in_flight{node="gpu1"}'] == 0
    # Per process, and equal here: each serves, on the same routing version.
    assert a["clawdbot_router_up"] == b["clawdbot_router_up"] == 1


# --- (d) a config change made through one process ---


CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def admin_login(gw: GatewayProcess, user: User, password: str) -> httpx.Client:
    """An admin session opened through `gw`; sessions live in the database, so the cookie is
    good on every process."""
    client = httpx.Client(timeout=10)
    page = client.get(gw.url + "/admin/login/")
    token = CSRF.search(page.text)
    assert token is not None, page.text[:500]
    answer = client.post(
        gw.url + "/admin/login/?next=/admin/",
        data={
            "username": user.username,
            "password": password,
            "csrfmiddlewaretoken": token.group(1),
        },
    )
    assert answer.status_code == 302, answer.text[:500]
    return client


def admin_action(client: httpx.Client, changelist: str, action: str, pk: int) -> float:
    """Run an admin action on one object; returns the monotonic time of its answer, by which
    the change was committed (and the routing version bumped)."""
    token = CSRF.search(client.get(changelist).text)
    assert token is not None
    answer = client.post(
        changelist,
        data={
            "action": action,
            "_selected_action": str(pk),
            "index": "0",
            "csrfmiddlewaretoken": token.group(1),
        },
    )
    assert answer.status_code == 302, answer.text[:500]
    return time.monotonic()


def seen_after(committed: float, condition: Callable[[], bool], what: str) -> float:
    """Seconds from `committed` until `condition` holds (polled every 10 ms, up to 10 s)."""
    poll(condition, 10, what)
    return time.monotonic() - committed


def test_a_config_change_through_one_process_reaches_the_other_within_a_second(
    both: list[GatewayProcess],
    simulator: Callable[..., SimProcess],
    admin_user: User,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first, second = both
    world: World = build(first, {"gpu1": simulator(*FAST)})
    second.wait_for_config()
    admin = admin_login(first, admin_user, "correct-horse-battery")
    assert chat(second, world.key, max_tokens=1).status_code == 200

    # A key revoked in the admin served by the first process: refused by the second.
    key = ApiKey.objects.get(name="world")
    committed = admin_action(admin, first.url + "/admin/gateway/apikey/", "revoke", key.pk)
    revoked_s = seen_after(
        committed,
        lambda: (
            httpx.get(second.url + "/v1/models", headers=world.headers(), timeout=5).status_code
            == 401
        ),
        "the revoked key refused by the other process",
    )

    # A node drained through the second process's admin (same session): the first stops
    # routing to it.
    other = apikey_create(name="after-revoke").secret
    for gw in both:
        gw.wait_for_config()
    node = world.nodes["gpu1"]
    committed = admin_action(admin, second.url + "/admin/nodes/node/", "drain", node.pk)
    drained_s = seen_after(
        committed,
        lambda: chat(first, other, max_tokens=1).status_code == 503,
        "the drained node no longer routed by the other process",
    )
    admin.close()
    with capsys.disabled():
        print(f"\nconfig change seen by the other process: key revoked {revoked_s:.3f} s, ", end="")
        print(f"node drained {drained_s:.3f} s after the admin's answer")
    assert revoked_s < PROPAGATION_LIMIT_S
    assert drained_s < PROPAGATION_LIMIT_S


# --- (e) one process killed mid-load ---


@pytest.fixture
def victim(gateway: GatewayProcess) -> Iterator[GatewayProcess]:
    process = GatewayProcess()
    yield process
    process.stop()


@pytest.fixture
def flush_worker(transactional_db: None) -> Iterator[CeleryProcess]:
    """A real Celery worker: it runs the request-log flush, as beat would have it do."""
    worker = CeleryProcess()
    yield worker
    worker.stop()


def test_killing_one_process_mid_load_loses_no_request_log_of_the_other(
    gateway: GatewayProcess,
    victim: GatewayProcess,
    simulator: Callable[..., SimProcess],
    flush_worker: CeleryProcess,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # About 50 ms per answer (10 tokens at 5 ms), so the victim dies with requests running.
    sim = simulator(*SLOW, "--decode-ms", "5", "--parallel", "64")
    world = build(
        gateway, {"gpu1": sim}, node_fields={"gpu1": {"max_concurrent": 64, "queue_size": 64}}
    )
    victim.wait_for_config()
    answered: dict[str, list[str]] = {"survivor": [], "victim": []}
    failures: list[str] = []
    stop = threading.Event()

    def load(gw: GatewayProcess, name: str) -> None:
        with httpx.Client(timeout=20, headers=world.headers()) as client:
            while not stop.is_set():
                body = {"model": "qwen3-32b", "messages": HELLO, "max_tokens": 10}
                try:
                    answer = client.post(gw.url + "/v1/chat/completions", json=body)
                except httpx.TransportError as exc:
                    if name == "victim":
                        return  # killed under it
                    failures.append(repr(exc))
                    return
                if answer.status_code == 200:
                    answered[name].append(answer.headers["x-request-id"])
                else:
                    failures.append(f"{name}: {answer.status_code} {answer.text[:200]}")

    threads = [
        threading.Thread(target=load, args=(gw, name), daemon=True)
        for gw, name in ((gateway, "survivor"), (victim, "victim"))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    try:
        poll(
            lambda: len(answered["victim"]) >= 20 and len(answered["survivor"]) >= 20,
            30,
            "load on both processes",
        )
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(timeout=10)
        at_kill = len(answered["survivor"])
        poll(lambda: len(answered["survivor"]) >= at_kill + 40, 30, "the survivor serving on")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not failures, failures[:5]
    survivor = set(answered["survivor"])

    def all_flushed() -> bool:
        tasks.flush_request_logs.delay()  # run by the worker, as beat sends it every 2 s
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if RequestLog.objects.filter(request_id__in=survivor).count() == len(survivor):
                return True
            time.sleep(0.05)  # bounded poll of the database
        return False

    poll(all_flushed, 60, f"request-log rows of all {len(survivor)} survivor requests")
    victims = RequestLog.objects.filter(request_id__in=answered["victim"]).count()
    with capsys.disabled():
        print(
            f"\nkilled mid-load: {len(survivor)} requests answered by the survivor, all logged; "
            f"{victims} of the {len(answered['victim'])} the killed process answered logged"
        )
