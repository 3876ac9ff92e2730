"""Loading a model profile at runtime: `POST /v1/admin/models/load` on the real ASGI app (daphne),
a real Celery worker running the load, simulator processes as GPU nodes and, for the agent
path, a real `clawdbot agent` process; plus the prefetch warm-up after deployments are added."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client
from django.utils import timezone

from clawdbot_site import redis_keys
from gateway.models import ApiKey
from gateway.services import apikey_create
from nodes import telemetry_store
from nodes.keepalive import keep_alive_wire_value
from nodes.load_jobs import load_model, schedule_prefetch_warmup
from nodes.models import Deployment, ModelProfile, Node
from nodes.placement import vram_shortfall
from tests.agents import AgentProcess
from tests.gateways import GatewayProcess
from tests.simulators import SimProcess
from tests.workers import CeleryProcess

pytestmark = pytest.mark.slow  # real servers and processes

LOAD = "/v1/admin/models/load"
WAIT_S = 30.0
POLL_S = 0.1


@pytest.fixture(scope="module")
def worker(django_db_setup: None, django_db_blocker: Any) -> Iterator[CeleryProcess]:
    process = CeleryProcess()
    yield process
    process.stop()


def staff_key() -> str:
    return apikey_create(name="ops", staff=True).secret


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def post_load(gateway: GatewayProcess, key: str | None, body: Any) -> httpx.Response:
    headers = bearer(key) if key else {}
    return httpx.post(gateway.url + LOAD, json=body, headers=headers, timeout=10)


def wait_finished(get: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = get()
        if status["state"] in ("SUCCESS", "FAILURE"):
            return status
        time.sleep(POLL_S)  # bounded poll of the task's own report
    raise AssertionError(f"the load did not finish within {WAIT_S} s: {status}")


def finish(gateway: GatewayProcess, key: str, accepted: httpx.Response) -> dict[str, Any]:
    url = gateway.url + accepted.json()["status_url"]
    return wait_finished(lambda: httpx.get(url, headers=bearer(key), timeout=10).json())


def preloads(sim: SimProcess) -> list[dict[str, Any]]:
    return [
        r["body"]
        for r in sim.requests()
        if r["path"] == "/api/chat" and r["body"].get("messages") == []
    ]


def error_of(response: httpx.Response | Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    error: dict[str, Any] = body["error"]
    return error


# --- Loading --------------------------------------------------------------------------------


def test_a_staff_key_loads_a_profile_on_a_node(
    gateway: GatewayProcess,
    worker: CeleryProcess,
    simulator: Callable[..., SimProcess],
    make_profile: Callable[..., ModelProfile],
    make_node: Callable[..., Node],
) -> None:
    sim = simulator("--model", "qwen3:32b", "--cold-load-ms", "200")
    profile = make_profile(context_window=16384, keep_alive="30m", warmup_prompt="Say hi")
    make_node("gpu1", base_url=sim.url)
    key = staff_key()

    accepted = post_load(gateway, key, {"model": "qwen3-32b", "nodes": ["gpu1"]})

    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert (body["model"], body["nodes"]) == ("qwen3-32b", ["gpu1"])
    assert body["status_url"] == f"/v1/admin/tasks/{body['task_id']}"
    assert accepted.headers["location"] == body["status_url"]
    status = finish(gateway, key, accepted)
    assert (status["state"], status["done"], status["total"]) == ("SUCCESS", 1, 1), status
    [result] = status["results"]
    assert (result["node"], result["ok"], result["via"], result["error"]) == (
        "gpu1",
        True,
        "direct",
        "",
    )
    assert result["load_ms"] >= 150  # the simulated cold load
    assert isinstance(result["prompt_ms"], int)
    assert preloads(sim) == [
        {
            "model": "qwen3:32b",
            "messages": [],
            "stream": False,
            "keep_alive": keep_alive_wire_value("30m"),
            "options": {"num_ctx": 16384},
        }
    ]
    deployment = Deployment.objects.get(node__name="gpu1", profile=profile)
    assert deployment.loaded and deployment.loaded_at is not None
    assert deployment.last_load_ms == result["load_ms"]


def test_without_nodes_every_node_that_fits_is_loaded_and_failures_are_reported(
    gateway: GatewayProcess,
    worker: CeleryProcess,
    simulator: Callable[..., SimProcess],
    make_profile: Callable[..., ModelProfile],
    make_node: Callable[..., Node],
) -> None:
    sim = simulator("--model", "qwen3:32b")
    profile = make_profile(min_vram_gb=40)
    make_node("gpu1", base_url=sim.url)
    make_node("gpu2", base_url="http://127.0.0.1:9")  # nothing listens there
    make_node("small", vram_gb_per_gpu=24)
    make_node("off", base_url=sim.url, enabled=False)
    key = staff_key()

    accepted = post_load(gateway, key, {"model": "qwen3-32b"})

    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["nodes"] == ["gpu1", "gpu2"]
    status = finish(gateway, key, accepted)
    assert (status["state"], status["done"], status["total"]) == ("SUCCESS", 2, 2), status
    results = {r["node"]: r for r in status["results"]}
    assert results["gpu1"]["ok"] is True
    assert results["gpu2"]["ok"] is False
    assert results["gpu2"]["error"]
    assert Deployment.objects.get(node__name="gpu1").loaded is True
    failed = Deployment.objects.get(node__name="gpu2")
    assert (failed.loaded, failed.last_load_error) == (False, results["gpu2"]["error"])
    assert not Deployment.objects.filter(node__name__in=["small", "off"]).exists()
    assert len(preloads(sim)) == 1
    assert profile.deployments.count() == 2


def test_a_node_with_a_live_agent_is_warmed_by_its_agent(
    gateway: GatewayProcess,
    worker: CeleryProcess,
    simulator: Callable[..., SimProcess],
    make_profile: Callable[..., ModelProfile],
    make_node: Callable[..., Node],
    tmp_path: Path,
) -> None:
    sim = simulator("--model", "qwen3:32b")
    make_profile()
    make_node("gpu3", base_url=sim.url)
    key = staff_key()
    agent = AgentProcess("gpu3", tmp_path, None)
    try:
        status = finish(gateway, key, post_load(gateway, key, {"model": "qwen3-32b"}))
    finally:
        agent.stop()

    assert status["state"] == "SUCCESS", status
    [result] = status["results"]
    assert (result["node"], result["ok"], result["via"]) == ("gpu3", True, "agent"), (
        result,
        agent.output()[-2000:],
    )
    assert len(preloads(sim)) == 1
    assert Deployment.objects.get(node__name="gpu3").loaded is True


# --- Who may load ---------------------------------------------------------------------------


def test_only_live_staff_keys_may_load(
    gateway: GatewayProcess, make_profile: Callable[..., ModelProfile]
) -> None:
    make_profile()
    body = {"model": "qwen3-32b"}

    missing = post_load(gateway, None, body)
    error = error_of(missing, 401)
    assert error["code"] == "invalid_api_key"
    assert "Bearer" in missing.headers["www-authenticate"]
    assert missing.headers["x-should-retry"] == "false"

    unknown = error_of(post_load(gateway, "ck-abcdefgh-" + "x" * 40, body), 401)
    assert unknown["code"] == "invalid_api_key"
    assert "ck-abcdefgh-…" in unknown["message"]

    ordinary = error_of(post_load(gateway, apikey_create(name="app").secret, body), 403)
    assert "not a staff key" in ordinary["message"]

    revoked = apikey_create(name="old-ops", staff=True)
    ApiKey.objects.filter(pk=revoked.key.pk).update(revoked_at=timezone.now())
    assert "revoked" in error_of(post_load(gateway, revoked.secret, body), 401)["message"]

    expired = apikey_create(name="temp-ops", staff=True)
    ApiKey.objects.filter(pk=expired.key.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert "expired" in error_of(post_load(gateway, expired.secret, body), 401)["message"]


def test_an_admin_session_may_load_and_csrf_applies(
    transactional_db: None,
    worker: CeleryProcess,
    admin_user: User,
    make_profile: Callable[..., ModelProfile],
    make_node: Callable[..., Node],
) -> None:
    make_profile()
    make_node("gpu1")  # nothing listens there: the load fails fast, and says so
    client = Client()
    client.force_login(admin_user)

    accepted = client.post(LOAD, {"model": "qwen3-32b"}, content_type="application/json")

    assert accepted.status_code == 202, accepted.content
    url = accepted.json()["status_url"]
    status = wait_finished(lambda: client.get(url).json())
    assert status["state"] == "SUCCESS"
    assert [(r["node"], r["ok"]) for r in status["results"]] == [("gpu1", False)]

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(admin_user)
    refused = strict.post(LOAD, {"model": "qwen3-32b"}, content_type="application/json")
    assert "CSRF" in error_of(refused, 403)["message"]

    clerk = User.objects.create_user("clerk", password="correct-horse-battery")
    client.force_login(clerk)
    denied = client.post(LOAD, {"model": "qwen3-32b"}, content_type="application/json")
    assert "not staff" in error_of(denied, 403)["message"]

    anonymous = Client().post(LOAD, {"model": "qwen3-32b"}, content_type="application/json")
    assert error_of(anonymous, 401)["code"] == "invalid_api_key"


# --- What may be loaded where ---------------------------------------------------------------


def test_unknown_models_nodes_and_too_small_nodes_are_refused(
    gateway: GatewayProcess,
    make_profile: Callable[..., ModelProfile],
    make_node: Callable[..., Node],
) -> None:
    make_profile(min_vram_gb=40)
    make_node("gpu1")
    make_node("small", gpu_count=1, vram_gb_per_gpu=24)
    make_node("unsized", vram_gb_per_gpu=0)
    key = staff_key()
    # The unsized node's agent reports two 8 GiB GPUs.
    telemetry_store.publish(
        "unsized", {"nvml": True, "gpus": [{"memory_total_mib": 8192}] * 2}, ttl_s=30
    )
    try:
        unsized = error_of(
            post_load(gateway, key, {"model": "qwen3-32b", "nodes": ["unsized"]}), 409
        )
    finally:
        telemetry_store.sync_client().delete(telemetry_store.telemetry_key("unsized"))

    model = error_of(post_load(gateway, key, {"model": "llama-70b"}), 404)
    assert (model["code"], model["param"]) == ("model_not_found", "model")
    assert "llama-70b" in model["message"] and "qwen3-32b" in model["message"]

    node = error_of(post_load(gateway, key, {"model": "qwen3-32b", "nodes": ["gpu1", "gpu9"]}), 404)
    assert (node["code"], node["param"]) == ("node_not_found", "nodes")
    assert "gpu9" in node["message"]

    small = error_of(post_load(gateway, key, {"model": "qwen3-32b", "nodes": ["small"]}), 409)
    assert (small["code"], small["param"]) == ("insufficient_vram", "nodes")
    assert "needs 40 GB" in small["message"] and "small has 24 GB" in small["message"]

    assert unsized["code"] == "insufficient_vram"
    assert "unsized has 16 GB (reported by its GPUs)" in unsized["message"]
    assert not Deployment.objects.exists()


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        (b"", 400, None, None),
        (b"{not json", 400, None, None),
        (b'["qwen3-32b"]', 400, None, "invalid_type"),
        (b"{}", 400, "model", "missing_required_parameter"),
        (b'{"model": 7}', 400, "model", "invalid_type"),
        (b'{"model": " "}', 400, "model", "invalid_value"),
        (b'{"model": "qwen3-32b", "nodes": "gpu1"}', 400, "nodes", "invalid_type"),
        (b'{"model": "qwen3-32b", "nodes": ["gpu1", 2]}', 400, "nodes[1]", "invalid_type"),
        (b'{"model": "qwen3-32b", "nodes": []}', 400, "nodes", "invalid_value"),
        (b'{"model": "qwen3-32b", "node": "gpu1"}', 400, "node", "unknown_parameter"),
    ],
)
def test_bad_bodies_name_the_parameter(
    gateway: GatewayProcess,
    body: bytes,
    status: int,
    param: str | None,
    code: str | None,
) -> None:
    response = httpx.post(gateway.url + LOAD, content=body, headers=bearer(staff_key()), timeout=10)
    error = error_of(response, status)
    assert (error["param"], error["code"]) == (param, code), error
    assert error["type"] == "invalid_request_error"


def test_wrong_methods_and_unknown_urls_answer_in_the_openai_shape(
    gateway: GatewayProcess,
) -> None:
    headers = bearer(staff_key())

    wrong = httpx.get(gateway.url + LOAD, headers=headers, timeout=10)
    assert error_of(wrong, 405)["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["allow"]

    task = httpx.get(gateway.url + "/v1/admin/tasks/no-such-task", headers=headers, timeout=10)
    assert error_of(task, 404)["code"] == "task_not_found"

    lost = httpx.post(gateway.url + "/v1/admin/models/unload", headers=headers, timeout=10)
    assert error_of(lost, 404)["code"] == "not_found"


# --- Prefetch after deployments are added ---------------------------------------------------


def test_new_deployments_of_prefetch_profiles_are_warmed_after_commit(
    transactional_db: None,
    worker: CeleryProcess,
    simulator: Callable[..., SimProcess],
    make_profile: Callable[..., ModelProfile],
    make_node: Callable[..., Node],
) -> None:
    sim = simulator("--model", "qwen3:32b", "--model", "llama3:8b")
    hot = make_profile("qwen3-32b", prefetch=True, keep_alive="-1")
    cold = make_profile("llama3-8b", upstream_model="llama3:8b")
    node = make_node("gpu1", base_url=sim.url)

    with transaction.atomic():
        warmed = Deployment.objects.create(node=node, profile=hot)
        untouched = Deployment.objects.create(node=node, profile=cold)
        schedule_prefetch_warmup([warmed.pk, untouched.pk])

    deadline = time.monotonic() + WAIT_S
    while not Deployment.objects.get(pk=warmed.pk).loaded:
        assert time.monotonic() < deadline, worker.output()[-3000:]
        time.sleep(POLL_S)  # bounded poll of the row the worker writes
    untouched.refresh_from_db()
    assert (untouched.loaded, untouched.last_load_ms) == (False, None)
    assert [body["model"] for body in preloads(sim)] == ["qwen3:32b"]
    assert preloads(sim)[0]["keep_alive"] == -1


# Celery writes results with redis-py's deprecated setex.
@pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")
def test_a_failed_load_task_reports_its_error_without_a_traceback(gateway: GatewayProcess) -> None:
    task_id = "failed-load-task"
    record = {"model": "qwen3-32b", "nodes": ["gpu1"]}
    telemetry_store.sync_client().set(redis_keys.load_job(task_id), orjson.dumps(record), ex=60)
    load_model.backend.store_result(task_id, RuntimeError("the database went away"), "FAILURE")
    try:
        response = httpx.get(
            f"{gateway.url}/v1/admin/tasks/{task_id}", headers=bearer(staff_key()), timeout=10
        )
    finally:
        telemetry_store.sync_client().delete(redis_keys.load_job(task_id))
        load_model.backend.forget(task_id)

    assert response.status_code == 200
    assert response.json() == {
        "task_id": task_id,
        "state": "FAILURE",
        "model": "qwen3-32b",
        "nodes": ["gpu1"],
        "done": 0,
        "total": 1,
        "results": [],
        "error": "the load task failed: RuntimeError: the database went away",
    }


# --- The memory check on its own ------------------------------------------------------------


def test_configured_vram_wins_over_telemetry_and_unknown_memory_never_refuses() -> None:
    profile = ModelProfile(model_id="qwen3-32b", min_vram_gb=40)
    sized = Node(name="gpu1", gpu_count=2, vram_gb_per_gpu=16)
    unsized = Node(name="gpu2", vram_gb_per_gpu=0)

    assert vram_shortfall(profile, sized, telemetry_gb=160) == (
        "qwen3-32b needs 40 GB of GPU memory; gpu1 has 32 GB (2 × 16 GB configured)."
    )
    assert vram_shortfall(profile, unsized, telemetry_gb=23.6) == (
        "qwen3-32b needs 40 GB of GPU memory; gpu2 has 23.6 GB (reported by its GPUs)."
    )
    assert vram_shortfall(profile, unsized, telemetry_gb=None) is None
    assert vram_shortfall(profile, unsized, telemetry_gb=80) is None
    assert vram_shortfall(ModelProfile(model_id="tiny", min_vram_gb=0), sized) is None
