"""The console's pages render from real nodes, Redis state and request-log rows, in a
pinned number of queries whatever the number of nodes; who may open what; the node actions
go through the control plane's services."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
import redis
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django import DjangoAssertNumQueries

from clawdbot_site import redis_keys
from clawdbot_site.asgi import application
from gateway.models import RequestLog
from nodes import telemetry_store
from nodes.models import Deployment, GpuSample, ModelProfile, Node, ProbeRecord
from readiness.models import ReadinessResult, ReadinessRun

H200 = {
    "nvml": True,
    "error": "",
    "gpus": [
        {
            "index": 0,
            "name": "NVIDIA H200",
            "utilisation_gpu_pct": 99,
            "memory_used_mib": 66560,
            "memory_total_mib": 143771,
            "temperature_c": 61,
            "power_draw_w": 692.0,
            "power_limit_w": 700.0,
        }
    ],
}

# A logged-in page costs the session and the user (2) before the view's own queries.
SESSION = 2


def figures(page: str, element: str = "gpu-figures") -> Any:
    found = re.search(rf'<script id="{element}" type="application/json">(.*?)</script>', page, re.S)
    assert found, f"no #{element} in the page"
    return json.loads(found.group(1))


@pytest.fixture
def staff(admin_client: Client) -> Client:
    return admin_client


def log_requests(latencies: list[float], *, statuses: list[int] | None = None, ago_s: float = 10):
    at = timezone.now() - timedelta(seconds=ago_s)
    RequestLog.objects.bulk_create(
        RequestLog(
            request_id=f"r{at.timestamp()}-{i}",
            created_at=at,
            endpoint="chat.completions",
            model="qwen3-32b",
            node="gpu1",
            status=(statuses or [200] * len(latencies))[i],
            latency_ms=ms,
        )
        for i, ms in enumerate(latencies)
    )


def test_the_overview_shows_the_cluster_and_a_card_per_node(
    staff: Client,
    make_node: Callable[..., Node],
    make_profile: Callable[..., ModelProfile],
    deploy: Callable[..., Deployment],
    redis_client: redis.Redis,
) -> None:
    node = make_node("gpu1", gpu_type="H200", state="READY", max_concurrent=4, queue_size=8)
    make_node("gpu2", state="DOWN", draining=True)
    deployment = deploy(node, make_profile("qwen3-32b"))
    Deployment.objects.filter(pk=deployment.pk).update(loaded=True)
    telemetry_store.publish("gpu1", H200)
    future_ms = int(time.time() * 1000) + 60_000
    redis_client.zadd(redis_keys.slots("gpu1"), {"a": future_ms, "b": future_ms, "old": 1})
    redis_client.zadd(redis_keys.queue("gpu1"), {"c": future_ms})
    redis_client.hset(redis_keys.TIER, mapping={"tier": 1, "since": future_ms})
    # 100 requests in the window, 1..100 ms, two of them 5xx; one old one outside it.
    log_requests([float(ms) for ms in range(1, 101)], statuses=[200] * 98 + [502, 503])
    log_requests([9999.0], ago_s=400)

    page = staff.get("/").content.decode()

    assert "tier 1 · cache" in page
    assert 'data-stat="per_second">0.33<' in page
    assert 'data-stat="error_pct">2.0<' in page
    assert 'data-stat="p50">50<' in page and 'data-stat="p95">95<' in page
    assert 'data-stat="p99">99<' in page
    stats = staff.get(reverse("dashboard:overview_stats")).json()
    assert stats == {
        "requests": 100,
        "per_second": 0.33,
        "error_pct": 2.0,
        "p50": 50,
        "p95": 95,
        "p99": 99,
    }
    card = page[page.index('data-node="gpu1"') : page.index('data-node="gpu2"')]
    assert "badge-READY" in card and "2 / 4" in card and "1 / 8" in card
    assert 'tag tag-loaded" title="loaded">qwen3-32b' in card
    assert "draining: finishing its requests" in page[page.index('data-node="gpu2"') :]
    assert figures(page)["gpu1"][0]["power_w"] == 692.0
    assert figures(page)["gpu2"] == []
    assert "no telemetry: no agent reporting" in page


def test_the_overview_says_what_to_do_without_nodes(
    staff: Client, redis_client: redis.Redis
) -> None:
    page = staff.get("/").content.decode()
    assert "No nodes yet" in page and "clawdbot onboard" in page
    assert 'data-stat="p99">–<' in page  # no requests: no percentiles, not zeros
    assert staff.get(reverse("dashboard:overview_stats")).json() == {
        "requests": 0,
        "per_second": 0.0,
        "error_pct": 0.0,
    }


@pytest.mark.parametrize("nodes", [1, 6])
def test_the_overview_costs_the_same_queries_for_any_number_of_nodes(
    staff: Client,
    make_node: Callable[..., Node],
    make_profile: Callable[..., ModelProfile],
    deploy: Callable[..., Deployment],
    django_assert_num_queries: DjangoAssertNumQueries,
    redis_client: redis.Redis,
    nodes: int,
) -> None:
    profile = make_profile()
    for i in range(nodes):
        deploy(make_node(f"gpu{i}"), profile)
    log_requests([10.0, 20.0])
    # nodes, deployments with profiles; count and errors, then p50, p95, p99 at their ranks
    with django_assert_num_queries(SESSION + 2 + 4):
        assert staff.get("/").status_code == 200
    with django_assert_num_queries(SESSION + 2):
        assert staff.get(reverse("dashboard:nodes")).status_code == 200
    with django_assert_num_queries(SESSION + 4):
        assert staff.get(reverse("dashboard:overview_stats")).status_code == 200


def test_the_node_page_shows_probes_transitions_heals_and_gpu_history(
    staff: Client,
    make_node: Callable[..., Node],
    django_assert_num_queries: DjangoAssertNumQueries,
    redis_client: redis.Redis,
) -> None:
    node = make_node("gpu1", state="DOWN")
    now = timezone.now()
    states = ["READY", "READY", "DEGRADED", "DOWN"]  # oldest first
    ProbeRecord.objects.bulk_create(
        ProbeRecord(
            node=node,
            at=now - timedelta(seconds=5 * (len(states) - i)),
            ok=state == "READY",
            latency_ms=12.5,
            error="" if state == "READY" else "connection refused",
            state_after=state,
        )
        for i, state in enumerate(states)
    )
    GpuSample.objects.create(
        node=node,
        at=now - timedelta(minutes=1),
        gpu_index=0,
        utilisation_pct=97,
        memory_used_mib=2048,
        temperature_c=60,
        power_w=650,
    )
    GpuSample.objects.create(node=node, at=now - timedelta(hours=7), gpu_index=0, power_w=1)
    url = reverse("dashboard:node", args=["gpu1"])
    # node, deployments, probes, heal events, GPU samples
    with django_assert_num_queries(SESSION + 5):
        page = staff.get(url).content.decode()
    transitions = page[page.index("State transitions") : page.index("GPU history")]
    assert transitions.index("badge-DOWN") < transitions.index("badge-DEGRADED")
    assert "from READY" in transitions and "from DEGRADED" in transitions
    assert page.count("connection refused") >= 2
    history = figures(page, "gpu-history")
    assert [(h["utilisation_pct"], h["memory_used_gib"], h["power_w"]) for h in history] == [
        (97, 2.0, 650)
    ]
    assert "No self-heal so far: the node has no restart command" in page
    assert staff.get(reverse("dashboard:node", args=["nope"])).status_code == 404


def test_drain_and_undrain_from_the_node_page(
    staff: Client,
    make_node: Callable[..., Node],
    redis_client: redis.Redis,
    django_capture_on_commit_callbacks: Any,
) -> None:
    node = make_node("gpu1")
    version = int(redis_client.get(redis_keys.ROUTING_VERSION) or 0)
    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(reverse("dashboard:node_action", args=["gpu1", "drain"]))
    assert response.status_code == 302 and response["Location"] == "/nodes/gpu1/"
    node.refresh_from_db()
    assert node.draining
    assert int(redis_client.get(redis_keys.ROUTING_VERSION) or 0) > version
    page = staff.get("/nodes/gpu1/").content.decode()
    assert "gpu1 is draining" in page and ">Undrain<" in page
    staff.post(reverse("dashboard:node_action", args=["gpu1", "undrain"]))
    node.refresh_from_db()
    assert not node.draining


def test_probe_now_records_a_probe_of_the_real_node(
    staff: Client, make_node: Callable[..., Node], redis_client: redis.Redis
) -> None:
    # Port 9 (discard) refuses: the probe fails, is recorded and said so.
    make_node("gpu1", base_url="http://127.0.0.1:9")
    staff.post(reverse("dashboard:node_action", args=["gpu1", "probe"]))
    assert ProbeRecord.objects.filter(node__name="gpu1", ok=False).count() == 1
    page = staff.get("/nodes/gpu1/").content.decode()
    assert "Probe of gpu1: failed" in page


def test_node_actions_are_post_only_and_known(
    staff: Client, make_node: Callable[..., Node]
) -> None:
    make_node("gpu1")
    assert staff.get(reverse("dashboard:node_action", args=["gpu1", "drain"])).status_code == 405
    assert staff.post(reverse("dashboard:node_action", args=["gpu1", "explode"])).status_code == 404
    csrf = Client(enforce_csrf_checks=True)
    csrf.force_login(User.objects.get(username="root"))
    assert csrf.post(reverse("dashboard:node_action", args=["gpu1", "drain"])).status_code == 403
    assert not Node.objects.get(name="gpu1").draining


def test_the_readiness_page_shows_the_newest_run_with_reasons(
    staff: Client, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    now = timezone.now()
    ReadinessRun.objects.create(started_at=now - timedelta(days=1), state="passed", trigger="cli")
    run = ReadinessRun.objects.create(started_at=now, state="failed", trigger="api")
    ReadinessResult.objects.create(
        run=run, check_key="nodes", title="A node is ready", status="fail", reason="no READY node"
    )
    # the run, its results, the checklist
    with django_assert_num_queries(SESSION + 3):
        page = staff.get(reverse("dashboard:readiness")).content.decode()
    assert "badge-failed" in page and "A node is ready" in page and "no READY node" in page
    assert f"run {run.pk}" in page


def test_run_now_queues_a_run(
    staff: Client, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    from readiness import tasks

    sent: list[int] = []
    # The broker's side is Celery's; what matters here is the run sent once committed.
    monkeypatch.setattr(tasks.run_readiness, "delay", sent.append)
    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(reverse("dashboard:readiness_run"))
    assert response.status_code == 302
    run = ReadinessRun.objects.get()
    assert (run.trigger, run.state, sent) == ("console", "running", [run.pk])


def test_pages_need_a_login_and_staff_rights_except_chat(
    client: Client, django_user_model: type[User]
) -> None:
    response = client.get("/nodes/")
    assert response.status_code == 302 and response["Location"].startswith("/login/?next=")
    login = client.get("/login/").content.decode()
    assert 'name="username"' in login and "console.css" in login
    user = django_user_model.objects.create_user("ann", password="pw-12345678")
    client.force_login(user)
    assert client.get("/")["Location"] == reverse("dashboard:chat")
    for name in ("nodes", "readiness", "latency", "usage", "requests", "overview_stats"):
        assert client.get(reverse(f"dashboard:{name}")).status_code == 403, name
    assert client.get(reverse("dashboard:chat")).status_code == 200


def test_logging_in_lands_on_the_overview(client: Client, admin_user: User) -> None:
    response = client.post(
        "/login/", {"username": "root", "password": "correct-horse-battery", "next": ""}
    )
    assert response.status_code == 302 and response["Location"] == "/"


async def test_the_chart_library_is_served_from_our_static_files() -> None:
    # Through the ASGI application, as the server serves it: no CDN, works offline.
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        library = await http.get("/static/vendor/uplot/uPlot.iife.min.js")
        charts = await http.get("/static/dashboard/charts.js")
    assert library.status_code == 200 and "var uPlot" in library.text
    assert charts.status_code == 200 and "window.ClawCharts" in charts.text


@pytest.mark.django_db(transaction=True)  # a real commit: the run is sent from on_commit
def test_run_now_says_so_when_the_broker_is_unreachable(
    staff: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kombu.exceptions import OperationalError

    from readiness import tasks

    def unreachable(run_id: int) -> None:
        raise OperationalError("Error 111 connecting to the broker")

    monkeypatch.setattr(tasks.run_readiness, "delay", unreachable)
    response = staff.post(reverse("dashboard:readiness_run"), follow=True)
    assert "could not be started: Error 111" in response.content.decode()
    assert ReadinessRun.objects.get().state == "failed"
