"""The management REST API under /api: resources, node actions, the request-log query, the
OpenAPI schema, errors in the OpenAI shape, and who may call what (every endpoint)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLPattern, get_resolver
from django.utils import timezone

from admin_api import api_urls
from alerts.models import AlertChannel
from clawdbot_site import redis_keys
from gateway.models import ApiKey, RequestLog
from gateway.services import apikey_create
from nodes.models import Deployment, ModelProfile, Node
from tests.gateways import GatewayProcess
from tests.simulators import SimProcess

JSON = "application/json"


def call(client: Client, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    data = orjson.dumps(body) if body is not None else b""
    return getattr(client, method.lower())(path, data=data, content_type=JSON, **headers)


def error_of(response: Any) -> dict[str, Any]:
    assert response["Content-Type"].startswith(JSON), response.content[:200]
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"message", "type", "param", "code"} <= set(body["error"])
    return dict(body["error"])


@pytest.fixture
def staff(db: None) -> str:
    return apikey_create(name="ops", staff=True).secret


@pytest.fixture
def cluster(
    make_node: Callable[..., Node],
    make_profile: Callable[..., ModelProfile],
    deploy: Callable[[Node, ModelProfile], Deployment],
) -> dict[str, Any]:
    AlertChannel.objects.create(name="ops", kind="webhook", target="https://hooks.example/x")
    node = make_node("gpu1")
    profile = make_profile("qwen3-32b")
    slashed = make_profile("Qwen/Qwen3-8B", upstream_model="Qwen/Qwen3-8B")
    deployment = deploy(node, profile)
    return {"node": node, "profile": profile, "slashed": slashed, "deployment": deployment}


# --- every endpoint: who may call it ---------------------------------------------------

# One concrete request per route and method; the test below checks none is missing.
ENDPOINTS = [
    ("GET", "/api", "index"),
    ("GET", "/api/", "index"),
    ("GET", "/api/schema", "schema"),
    ("GET", "/api/docs", "docs"),
    ("GET", "/api/redoc", "redoc"),
    ("GET", "/api/nodes", "nodes"),
    ("POST", "/api/nodes", "nodes"),
    ("GET", "/api/nodes/gpu1", "node"),
    ("PUT", "/api/nodes/gpu1", "node"),
    ("PATCH", "/api/nodes/gpu1", "node"),
    ("DELETE", "/api/nodes/gpu1", "node"),
    ("POST", "/api/nodes/gpu1/drain", "node-drain"),
    ("POST", "/api/nodes/gpu1/undrain", "node-undrain"),
    ("POST", "/api/nodes/gpu1/probe", "node-probe"),
    ("POST", "/api/nodes/gpu1/warmup", "node-warmup"),
    ("GET", "/api/nodes/gpu1/probes", "node-probes"),
    ("GET", "/api/nodes/gpu1/heal-events", "node-heal-events"),
    ("GET", "/api/profiles", "profiles"),
    ("POST", "/api/profiles", "profiles"),
    ("GET", "/api/profiles/qwen3-32b", "profile"),
    ("PUT", "/api/profiles/qwen3-32b", "profile"),
    ("PATCH", "/api/profiles/qwen3-32b", "profile"),
    ("DELETE", "/api/profiles/qwen3-32b", "profile"),
    ("POST", "/api/profiles/qwen3-32b/load", "profile-load"),
    ("GET", "/api/deployments", "deployments"),
    ("POST", "/api/deployments", "deployments"),
    ("GET", "/api/deployments/1", "deployment"),
    ("PUT", "/api/deployments/1", "deployment"),
    ("PATCH", "/api/deployments/1", "deployment"),
    ("DELETE", "/api/deployments/1", "deployment"),
    ("GET", "/api/keys", "keys"),
    ("POST", "/api/keys", "keys"),
    ("GET", "/api/keys/abc", "key"),
    ("PUT", "/api/keys/abc", "key"),
    ("PATCH", "/api/keys/abc", "key"),
    ("DELETE", "/api/keys/abc", "key"),
    ("POST", "/api/keys/abc/revoke", "key-revoke"),
    ("GET", "/api/requests", "requests"),
    ("GET", "/api/requests/req-1", "request"),
    ("GET", "/api/tasks/t-1", "task"),
    ("GET", "/api/alert-channels", "alert-channels"),
    ("POST", "/api/alert-channels", "alert-channels"),
    ("GET", "/api/alert-channels/ops", "alert-channel"),
    ("PUT", "/api/alert-channels/ops", "alert-channel"),
    ("PATCH", "/api/alert-channels/ops", "alert-channel"),
    ("DELETE", "/api/alert-channels/ops", "alert-channel"),
    ("POST", "/api/alert-channels/ops/test", "alert-channel-test"),
    ("GET", "/api/readiness/runs", "readiness-runs"),
    ("POST", "/api/readiness/runs", "readiness-runs"),
    ("GET", "/api/readiness/runs/1", "readiness-run"),
    ("GET", "/api/readiness/checks", "readiness-checks"),
    ("GET", "/api/readiness/checks/database", "readiness-check"),
    ("PUT", "/api/readiness/checks/database", "readiness-check"),
    ("PATCH", "/api/readiness/checks/database", "readiness-check"),
]


def test_the_permission_table_names_every_route() -> None:
    names = {
        p.name for p in api_urls.urlpatterns if isinstance(p, URLPattern) and p.name is not None
    }
    assert names == {name for _, _, name in ENDPOINTS}
    resolver = get_resolver()
    index = resolver.resolve("/api/").func
    for _, path, name in ENDPOINTS:
        match = resolver.resolve(path)
        if path == "/api":  # mounted beside the include, as /v1 is beside /v1/
            assert match.func.__name__ == index.__name__
            continue
        assert match.url_name == name, (path, match.url_name)


@pytest.mark.parametrize(("method", "path", "name"), ENDPOINTS)
def test_anonymous_callers_get_401_with_a_bearer_challenge(
    client: Client, db: None, method: str, path: str, name: str
) -> None:
    response = call(client, method, path)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert error_of(response)["code"] == "invalid_api_key"


@pytest.mark.parametrize(("method", "path", "name"), ENDPOINTS)
def test_a_non_staff_key_gets_403(
    client: Client, db: None, method: str, path: str, name: str
) -> None:
    key = apikey_create(name="app").secret
    response = call(client, method, path, key=key)
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "permission_denied" and "not a staff key" in error["message"]


@pytest.mark.parametrize(("method", "path", "name"), ENDPOINTS)
def test_a_non_staff_user_gets_403(
    client: Client, db: None, method: str, path: str, name: str
) -> None:
    user = User.objects.create_user("alice", password="pw-alice-123")
    client.force_login(user)
    response = call(client, method, path)
    assert response.status_code == 403
    assert error_of(response)["code"] == "permission_denied"


@pytest.mark.parametrize(("method", "path", "name"), ENDPOINTS)
def test_revoked_and_wrong_keys_get_401(
    client: Client, db: None, method: str, path: str, name: str
) -> None:
    created = apikey_create(name="old-ops", staff=True)
    ApiKey.objects.filter(pk=created.key.pk).update(revoked_at=timezone.now())
    assert call(client, method, path, key=created.secret).status_code == 401
    assert call(client, method, path, key="ck-nothere-" + "x" * 32).status_code == 401


@pytest.mark.parametrize(("method", "path", "name"), ENDPOINTS)
def test_a_staff_key_is_let_in(
    client: Client, cluster: dict[str, Any], staff: str, method: str, path: str, name: str
) -> None:
    if name == "node-probe":
        pytest.skip("probes the node over the network: test_probe_now")
    response = call(client, method, path, key=staff)
    assert response.status_code not in (401, 403), response.content[:300]
    assert response.status_code < 500, response.content[:300]


def test_a_staff_session_needs_the_csrf_token_to_write(
    admin_user: User, cluster: dict[str, Any]
) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_user)
    assert call(browser, "GET", "/api/nodes").status_code == 200
    refused = call(browser, "POST", "/api/nodes/gpu1/drain")
    assert refused.status_code == 403
    assert "CSRF" in error_of(refused)["message"]
    assert Node.objects.get(name="gpu1").draining is False


def test_unknown_urls_under_api_are_json_404s(client: Client, staff: str) -> None:
    response = call(client, "GET", "/api/nope", key=staff)
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


# --- nodes -------------------------------------------------------------------------------


NODE = {
    "name": "gpu2",
    "base_url": "http://10.0.0.2:11434",
    "api_kind": "ollama",
    "gpu_type": "H100",
    "gpu_count": 2,
    "vram_gb_per_gpu": 80,
    "max_concurrent": 8,
    "queue_size": 32,
}


def routing_version() -> int:
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return int(client.get(redis_keys.ROUTING_VERSION) or 0)
    finally:
        client.close()


def test_nodes_are_created_read_updated_and_deleted(
    client: Client, staff: str, transactional_db: None
) -> None:
    before = routing_version()
    created = call(client, "POST", "/api/nodes", NODE, key=staff)
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["name"] == "gpu2" and body["state"] == "UNKNOWN" and body["models"] == []
    # The gateways are told (the routing version moves after the commit).
    assert routing_version() > before

    listed = call(client, "GET", "/api/nodes", key=staff).json()
    assert listed["count"] == 1 and listed["results"][0]["name"] == "gpu2"

    patched = call(client, "PATCH", "/api/nodes/gpu2", {"max_concurrent": 4}, key=staff)
    assert patched.status_code == 200 and patched.json()["max_concurrent"] == 4
    # What a GET returned can be sent back whole (read-only fields are ignored).
    whole = call(client, "GET", "/api/nodes/gpu2", key=staff).json()
    whole["queue_size"] = 8
    assert call(client, "PUT", "/api/nodes/gpu2", whole, key=staff).status_code == 200
    assert Node.objects.get(name="gpu2").queue_size == 8

    assert call(client, "DELETE", "/api/nodes/gpu2", key=staff).status_code == 204
    missing = call(client, "GET", "/api/nodes/gpu2", key=staff)
    assert missing.status_code == 404
    assert "/api/nodes" in error_of(missing)["message"]


@pytest.mark.parametrize(
    ("change", "param", "words"),
    [
        ({"name": "GPU 2"}, "name", ""),
        ({"base_url": "ftp://x"}, "base_url", ""),
        ({"gpu_type": "Z9000"}, "gpu_type", "not a valid choice"),
        ({"max_concurrent": 0}, "max_concurrent", ""),
        ({"labels": ["a"]}, "labels", ""),
        ({"gpu_typ": "A100"}, "gpu_typ", "Unknown field"),
        ({"max_concurrent": "many"}, "max_concurrent", "valid integer"),
    ],
)
def test_a_bad_node_is_a_400_naming_the_field(
    client: Client, staff: str, change: dict[str, Any], param: str, words: str
) -> None:
    response = call(client, "POST", "/api/nodes", {**NODE, **change}, key=staff)
    assert response.status_code == 400
    error = error_of(response)
    assert error["param"] == param
    assert param in error["fields"]
    assert words in error["message"]
    assert not Node.objects.filter(name__in=["gpu2", "GPU 2"]).exists()


def test_every_bad_field_is_listed_at_once(client: Client, staff: str) -> None:
    response = call(
        client, "POST", "/api/nodes", {**NODE, "gpu_type": "?", "queue_size": -1}, key=staff
    )
    assert set(error_of(response)["fields"]) == {"gpu_type", "queue_size"}


def test_a_duplicate_node_name_is_a_400(
    client: Client, staff: str, cluster: dict[str, Any]
) -> None:
    response = call(client, "POST", "/api/nodes", {**NODE, "name": "gpu1"}, key=staff)
    assert response.status_code == 400 and error_of(response)["param"] == "name"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[1, 2]", 400),
        (b'"text"', 400),
    ],
)
def test_bodies_that_are_not_a_json_object_are_400s(
    client: Client, staff: str, body: bytes, status: int
) -> None:
    response = client.post(
        "/api/nodes", data=body, content_type=JSON, HTTP_AUTHORIZATION=f"Bearer {staff}"
    )
    assert response.status_code == status
    error_of(response)


def test_a_json_body_sent_as_a_form_still_works(client: Client, staff: str) -> None:
    # curl -d '{…}' without -H 'Content-Type: application/json'
    response = client.post(
        "/api/nodes",
        data=orjson.dumps(NODE),
        content_type="application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION=f"Bearer {staff}",
    )
    assert response.status_code == 201, response.content


def test_drain_and_undrain(
    client: Client, staff: str, cluster: dict[str, Any], transactional_db: None
) -> None:
    before = routing_version()
    drained = call(client, "POST", "/api/nodes/gpu1/drain", key=staff)
    assert drained.status_code == 200 and drained.json()["draining"] is True
    assert routing_version() > before
    undrained = call(client, "POST", "/api/nodes/gpu1/undrain", key=staff)
    assert undrained.json()["draining"] is False
    assert Node.objects.get(name="gpu1").draining is False


def test_probe_now(
    client: Client, staff: str, simulator: Callable[..., SimProcess], transactional_db: None
) -> None:
    sim = simulator("--model", "qwen3:32b")
    node = Node.objects.create(
        name="sim1", base_url=sim.url, api_kind="ollama", gpu_type="A100", vram_gb_per_gpu=80
    )
    profile = ModelProfile.objects.create(
        model_id="qwen3-32b",
        upstream_model="qwen3:32b",
        context_window=8192,
        max_output_tokens=1024,
    )
    Deployment.objects.create(node=node, profile=profile)
    answer = call(client, "POST", "/api/nodes/sim1/probe", key=staff)
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["ok"] is True and body["error"] == "" and body["latency_ms"] >= 0
    assert body["previous_state"] == "UNKNOWN"
    assert node.probes.count() == 1  # recorded like beat's probes

    # A node that does not answer: the probe says why, and the failure is counted.
    dead = call(client, "PATCH", "/api/nodes/sim1", {"base_url": "http://127.0.0.1:9"}, key=staff)
    assert dead.status_code == 200
    failed = call(client, "POST", "/api/nodes/sim1/probe", key=staff).json()
    assert failed["ok"] is False and failed["error"]
    assert Node.objects.get(name="sim1").consecutive_failures == 1


def test_warmup_starts_one_load_task_per_deployed_profile(
    client: Client, staff: str, cluster: dict[str, Any], redis_client: redis.Redis
) -> None:
    answer = call(client, "POST", "/api/nodes/gpu1/warmup", key=staff)
    assert answer.status_code == 202, answer.content
    tasks = answer.json()["tasks"]
    assert [(t["model"], t["nodes"]) for t in tasks] == [("qwen3-32b", ["gpu1"])]
    status = call(client, "GET", tasks[0]["status_url"], key=staff)
    assert status.status_code == 200
    assert status.json()["model"] == "qwen3-32b" and status.json()["state"] == "PENDING"


def test_warmup_of_a_node_without_deployments_is_a_409(
    client: Client, staff: str, make_node: Callable[..., Node]
) -> None:
    make_node("empty")
    response = call(client, "POST", "/api/nodes/empty/warmup", key=staff)
    assert response.status_code == 409
    assert "POST /api/deployments" in error_of(response)["message"]


def test_probe_and_heal_history_are_paged(
    client: Client, staff: str, cluster: dict[str, Any]
) -> None:
    node = cluster["node"]
    now = timezone.now()
    for i in range(3):
        node.probes.create(
            at=now - timedelta(seconds=i), ok=i != 1, latency_ms=5, state_after="READY"
        )
    page = call(client, "GET", "/api/nodes/gpu1/probes?limit=2", key=staff).json()
    assert page["count"] == 3 and len(page["results"]) == 2
    assert page["results"][0]["ok"] is True and page["results"][1]["ok"] is False
    assert call(client, "GET", "/api/nodes/gpu1/heal-events", key=staff).json()["count"] == 0


# --- profiles and deployments --------------------------------------------------------------


def test_profiles_with_slashes_in_their_id(
    client: Client, staff: str, cluster: dict[str, Any]
) -> None:
    one = call(client, "GET", "/api/profiles/Qwen/Qwen3-8B", key=staff)
    assert one.status_code == 200 and one.json()["model_id"] == "Qwen/Qwen3-8B"
    patched = call(
        client, "PATCH", "/api/profiles/Qwen/Qwen3-8B", {"fallback": "qwen3-32b"}, key=staff
    )
    assert patched.status_code == 200 and patched.json()["fallback"] == "qwen3-32b"
    load = call(client, "POST", "/api/profiles/Qwen/Qwen3-8B/load", {"nodes": ["gpu1"]}, key=staff)
    assert load.status_code == 202, load.content
    assert load.json()["model"] == "Qwen/Qwen3-8B" and load["Location"].startswith("/api/tasks/")


def test_a_profile_s_degraded_answer_is_set_through_the_api(
    client: Client, staff: str, cluster: dict[str, Any]
) -> None:
    body = {"degraded_mode": "static", "degraded_answer": "Busy; try again in a minute."}
    patched = call(client, "PATCH", "/api/profiles/qwen3-32b", body, key=staff)
    assert patched.status_code == 200
    assert {k: patched.json()[k] for k in body} == body
    wrong = call(client, "PATCH", "/api/profiles/qwen3-32b", {"degraded_mode": "x"}, key=staff)
    assert wrong.status_code == 400 and error_of(wrong)["param"] == "degraded_mode"


def test_profile_rules_are_the_admins(client: Client, staff: str, cluster: dict[str, Any]) -> None:
    too_long = call(
        client, "PATCH", "/api/profiles/qwen3-32b", {"max_output_tokens": 10**6}, key=staff
    )
    assert too_long.status_code == 400
    assert error_of(too_long)["param"] == "max_output_tokens"
    loop = call(client, "PATCH", "/api/profiles/qwen3-32b", {"fallback": "qwen3-32b"}, key=staff)
    assert loop.status_code == 400 and "loop" in error_of(loop)["message"]
    unknown = call(client, "PATCH", "/api/profiles/qwen3-32b", {"fallback": "nope"}, key=staff)
    assert unknown.status_code == 400 and error_of(unknown)["param"] == "fallback"
    assert ModelProfile.objects.get(model_id="qwen3-32b").fallback is None


def test_hot_load_errors(client: Client, staff: str, cluster: dict[str, Any]) -> None:
    unknown_node = call(
        client, "POST", "/api/profiles/qwen3-32b/load", {"nodes": ["gpu9"]}, key=staff
    )
    assert unknown_node.status_code in (400, 404)
    assert "gpu9" in error_of(unknown_node)["message"]
    empty = call(client, "POST", "/api/profiles/qwen3-32b/load", {"nodes": []}, key=staff)
    assert empty.status_code == 400 and error_of(empty)["param"] == "nodes"
    typo = call(client, "POST", "/api/profiles/qwen3-32b/load", {"node": ["gpu1"]}, key=staff)
    assert typo.status_code == 400 and error_of(typo)["param"] == "node"
    missing = call(client, "POST", "/api/profiles/nope/load", key=staff)
    assert missing.status_code == 404


def test_deployments(
    client: Client,
    staff: str,
    cluster: dict[str, Any],
    make_node: Callable[..., Node],
    make_profile: Callable[..., ModelProfile],
) -> None:
    make_node("small", vram_gb_per_gpu=8)
    make_profile("big", min_vram_gb=40)
    refused = call(
        client, "POST", "/api/deployments", {"node": "small", "profile": "big"}, key=staff
    )
    assert refused.status_code == 400 and "GPU memory" in error_of(refused)["message"]
    twice = call(
        client, "POST", "/api/deployments", {"node": "gpu1", "profile": "qwen3-32b"}, key=staff
    )
    assert twice.status_code == 400
    created = call(
        client, "POST", "/api/deployments", {"node": "gpu1", "profile": "big"}, key=staff
    )
    assert created.status_code == 201, created.content
    pk = created.json()["id"]
    weight = call(client, "PATCH", f"/api/deployments/{pk}", {"weight_override": 2}, key=staff)
    assert weight.status_code == 200 and weight.json()["weight_override"] == 2
    moved = call(client, "PATCH", f"/api/deployments/{pk}", {"node": "small"}, key=staff)
    assert moved.status_code == 400 and error_of(moved)["param"] == "node"
    mine = call(client, "GET", "/api/deployments?node=gpu1&model=big", key=staff).json()
    assert [d["id"] for d in mine["results"]] == [pk]
    assert call(client, "DELETE", f"/api/deployments/{pk}", key=staff).status_code == 204
    assert not Deployment.objects.filter(pk=pk).exists()


# --- keys ----------------------------------------------------------------------------------


def test_a_created_key_shows_its_secret_once_and_works(
    client: Client, staff: str, cluster: dict[str, Any]
) -> None:
    created = call(
        client,
        "POST",
        "/api/keys",
        {"name": "support-bot", "models": ["qwen3-32b"], "rpm_limit": 60},
        key=staff,
    )
    assert created.status_code == 201, created.content
    assert created["Cache-Control"] == "no-store"
    body = created.json()
    secret = body["secret"]
    assert secret.startswith(f"ck-{body['prefix']}-")
    assert body["models"] == ["qwen3-32b"] and body["status"] == "active"
    assert body["staff"] is False and body["owner"] is None
    again = call(client, "GET", f"/api/keys/{body['prefix']}", key=staff).json()
    assert "secret" not in again and "digest" not in again
    # The new key is not staff: the management API refuses it.
    assert call(client, "GET", "/api/keys", key=secret).status_code == 403


def test_keys_are_updated_and_revoked_never_deleted(
    client: Client, staff: str, cluster: dict[str, Any], transactional_db: None
) -> None:
    prefix = call(client, "POST", "/api/keys", {"name": "bot"}, key=staff).json()["prefix"]
    before = routing_version()
    updated = call(
        client,
        "PATCH",
        f"/api/keys/ck-{prefix}",
        {"models": ["qwen3-32b"], "tpm_limit": 9},
        key=staff,
    )
    assert updated.status_code == 200 and updated.json()["tpm_limit"] == 9
    assert routing_version() > before
    unknown_model = call(client, "PATCH", f"/api/keys/{prefix}", {"models": ["x"]}, key=staff)
    assert unknown_model.status_code == 400 and error_of(unknown_model)["param"] == "models"

    revoked = call(client, "DELETE", f"/api/keys/{prefix}", key=staff)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert ApiKey.objects.filter(prefix=prefix).exists()
    assert call(client, "POST", f"/api/keys/{prefix}/revoke", key=staff).status_code == 200
    frozen = call(client, "PATCH", f"/api/keys/{prefix}", {"name": "again"}, key=staff)
    assert frozen.status_code == 409
    only_revoked = call(client, "GET", "/api/keys?status=revoked", key=staff).json()
    assert [k["prefix"] for k in only_revoked["results"]] == [prefix]
    bad = call(client, "GET", "/api/keys?status=gone", key=staff)
    assert bad.status_code == 400 and error_of(bad)["param"] == "status"


def test_a_staff_session_issues_keys_in_its_own_name(admin_client: Client) -> None:
    created = call(admin_client, "POST", "/api/keys", {"name": "mine"})
    assert created.status_code == 201 and created.json()["owner"] == "root"


# --- the request log -------------------------------------------------------------------------


def _log(request_id: str, ago_s: float, **fields: Any) -> RequestLog:
    values: dict[str, Any] = {
        "endpoint": "chat.completions",
        "model": "qwen3-32b",
        "node": "gpu1",
        "status": 200,
        "latency_ms": 100.0,
        "key_prefix": "aaaa1111",
    }
    values.update(fields)
    return RequestLog.objects.create(
        request_id=request_id, created_at=timezone.now() - timedelta(seconds=ago_s), **values
    )


def test_request_log_filters(client: Client, staff: str) -> None:
    _log("r1", 10)
    _log("r2", 20, status=429, error_code="rate_limit_exceeded")
    _log("r3", 30, status=502, node="gpu2", latency_ms=900)
    _log("r4", 4000, status=503, stream=True, key_prefix="bbbb2222")

    def ids(query: str) -> list[str]:
        response = call(client, "GET", f"/api/requests{query}", key=staff)
        assert response.status_code == 200, response.content
        return [row["request_id"] for row in response.json()["results"]]

    assert ids("") == ["r1", "r2", "r3", "r4"]  # newest first
    assert ids("?status=5xx") == ["r3", "r4"]
    assert ids("?status=429,5xx") == ["r2", "r3", "r4"]
    assert ids("?status=200") == ["r1"]
    assert ids("?node=gpu2") == ["r3"]
    assert ids("?since=1h") == ["r1", "r2", "r3"]
    assert ids("?until=1h") == ["r4"]
    assert ids("?stream=true") == ["r4"]
    assert ids("?key=ck-bbbb2222") == ["r4"]
    assert ids("?min_latency_ms=500") == ["r3"]
    assert ids("?error_code=rate_limit_exceeded&status=429") == ["r2"]
    since = (timezone.now() - timedelta(seconds=25)).isoformat()
    assert ids(f"?since={since}") == ["r1", "r2"]
    row = call(client, "GET", "/api/requests/r3", key=staff).json()
    assert row["status"] == 502 and row["latency_ms"] == 900


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("?stauts=500", "stauts"),
        ("?status=abc", "status"),
        ("?status=700", "status"),
        ("?since=yesterday", "since"),
        ("?stream=maybe", "stream"),
        ("?min_latency_ms=-1", "min_latency_ms"),
        ("?limit=0", "limit"),
        ("?limit=5000", "limit"),
        ("?cursor=garbage", "cursor"),
        ("?model=", "model"),
    ],
)
def test_bad_request_log_queries_are_400s(
    client: Client, staff: str, query: str, param: str
) -> None:
    response = call(client, "GET", f"/api/requests{query}", key=staff)
    assert response.status_code == 400, response.content
    assert error_of(response)["param"] == param


def test_the_request_log_is_paged_by_cursor(client: Client, staff: str) -> None:
    for i in range(5):
        _log(f"p{i}", i)
    first = call(client, "GET", "/api/requests?limit=2", key=staff).json()
    assert [r["request_id"] for r in first["results"]] == ["p0", "p1"]
    _log("newer", -5)  # a request logged while paging does not shift the pages
    second = call(client, "GET", first["next"], key=staff).json()
    assert [r["request_id"] for r in second["results"]] == ["p2", "p3"]
    third = call(client, "GET", second["next"], key=staff).json()
    assert [r["request_id"] for r in third["results"]] == ["p4"] and third["next"] is None


def test_an_unknown_request_id_is_a_404(client: Client, staff: str) -> None:
    response = call(client, "GET", "/api/requests/nope", key=staff)
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"


# --- the schema ------------------------------------------------------------------------------


def test_the_openapi_schema_documents_every_endpoint(client: Client, staff: str) -> None:
    response = client.get("/api/schema?format=json", HTTP_AUTHORIZATION=f"Bearer {staff}")
    assert response.status_code == 200
    schema = orjson.loads(response.content)
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for method, path, name in ENDPOINTS:
        if name in ("index", "schema", "docs", "redoc"):
            continue
        templated = (
            path.replace("gpu1", "{name}")
            .replace("qwen3-32b", "{model_id}")
            .replace("/1", "/{id}")
            .replace("abc", "{prefix}")
            .replace("req-1", "{request_id}")
            .replace("t-1", "{task_id}")
            .replace("/ops", "/{name}")
            .replace("runs/{id}", "runs/{id}")
            .replace("checks/database", "checks/{key}")
        )
        assert method.lower() in paths[templated], (method, templated)
    security = schema["components"]["securitySchemes"]
    assert security["staffApiKey"]["scheme"] == "bearer"


def test_swagger_ui_is_served_from_our_own_static_files(admin_client: Client) -> None:
    page = admin_client.get("/api/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "cdn" not in html.lower()


# --- alert channels --------------------------------------------------------------------------


def test_alert_channels_never_show_their_webhook_url(
    client: Client, staff: str, redis_client: redis.Redis
) -> None:
    secret_url = "https://hooks.slack.com/services/T000/B000/sEcReT"
    created = call(
        client,
        "POST",
        "/api/alert-channels",
        {"name": "oncall", "kind": "slack", "target": secret_url, "events": ["node_state"]},
        key=staff,
    )
    assert created.status_code == 201, created.content
    assert "sEcReT" not in created.content.decode()
    assert created.json()["target_hint"] == "https://hooks.slack.com/…"
    listed = call(client, "GET", "/api/alert-channels", key=staff).content.decode()
    assert "oncall" in listed and "sEcReT" not in listed
    bad = call(
        client,
        "POST",
        "/api/alert-channels",
        {"name": "x", "kind": "email", "target": "not-an-address"},
        key=staff,
    )
    assert bad.status_code == 400 and error_of(bad)["param"] == "target"
    wrong_event = call(
        client, "PATCH", "/api/alert-channels/oncall", {"events": ["nope"]}, key=staff
    )
    assert wrong_event.status_code == 400 and error_of(wrong_event)["param"] == "events"
    queued = call(client, "POST", "/api/alert-channels/oncall/test", key=staff)
    assert queued.status_code == 202 and queued.json() == {"queued": True}
    call(client, "PATCH", "/api/alert-channels/oncall", {"enabled": False}, key=staff)
    disabled = call(client, "POST", "/api/alert-channels/oncall/test", key=staff)
    assert disabled.status_code == 409


def test_served_by_the_real_asgi_application(gateway: GatewayProcess) -> None:
    """Through daphne and the ASGI router: /api reaches Django, Swagger UI's files load."""
    key = apikey_create(name="ops", staff=True).secret
    nodes = httpx.get(f"{gateway.url}/api/nodes", headers={"authorization": f"Bearer {key}"})
    assert nodes.status_code == 200 and nodes.json()["count"] == 0
    anonymous = httpx.get(f"{gateway.url}/api/keys")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"
    bundle = httpx.get(
        f"{gateway.url}/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"
    )
    assert bundle.status_code == 200 and len(bundle.content) > 100_000


# --- readiness ---------------------------------------------------------------------------------


def test_readiness_runs_and_checks(client: Client, staff: str, redis_client: redis.Redis) -> None:
    checks = call(client, "GET", "/api/readiness/checks", key=staff).json()
    assert checks["count"] == 14 and checks["results"][0]["key"] == "database"
    off = call(client, "PATCH", "/api/readiness/checks/smoke-load", {"enabled": False}, key=staff)
    assert off.status_code == 200 and off.json()["enabled"] is False
    renamed = call(
        client,
        "PATCH",
        "/api/readiness/checks/smoke-load",
        {"title": "x", "enabled": True},
        key=staff,
    )
    assert renamed.status_code == 200 and renamed.json()["title"] != "x"  # read-only
    started = call(client, "POST", "/api/readiness/runs", key=staff)
    assert started.status_code == 202, started.content
    body = started.json()
    assert body["state"] == "running" and body["trigger"] == "api (staff key)"
    assert started["Location"] == body["url"] == f"/api/readiness/runs/{body['id']}"
    one = call(client, "GET", body["url"], key=staff).json()
    assert one["id"] == body["id"] and one["results"] == []
    assert call(client, "GET", "/api/readiness/runs/999999", key=staff).status_code == 404


def test_hot_load_refuses_servers_that_cannot_load_models(
    client: Client, staff: str, cluster: dict[str, Any], make_node: Callable[..., Node]
) -> None:
    make_node("vllm1", api_kind="openai", base_url="http://127.0.0.1:9")
    refused = call(client, "POST", "/api/profiles/qwen3-32b/load", {"nodes": ["vllm1"]}, key=staff)
    assert refused.status_code == 409, refused.content
    error = error_of(refused)
    assert error["code"] == "cannot_load_here" and "vllm1" in error["message"]
    assert not Deployment.objects.filter(node__name="vllm1").exists()
    # Without nodes named, an OpenAI-compatible server is chosen only where it serves already.
    every = call(client, "POST", "/api/profiles/qwen3-32b/load", key=staff)
    assert every.status_code == 202 and every.json()["nodes"] == ["gpu1"]
