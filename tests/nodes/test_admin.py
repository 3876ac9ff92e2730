from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from gateway.keys import hash_key
from gateway.models import ApiKey
from gateway.services import apikey_create
from nodes.models import Deployment, ModelProfile, Node
from tests.simulators import SimProcess

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("model", ["node", "modelprofile", "deployment"])
def test_changelist_and_add_pages_render(admin_client: Client, model: str) -> None:
    for view in ("changelist", "add"):
        response = admin_client.get(reverse(f"admin:nodes_{model}_{view}"))
        assert response.status_code == 200


def test_apikey_pages_render(admin_client: Client) -> None:
    key = apikey_create(name="rendered").key
    assert admin_client.get(reverse("admin:gateway_apikey_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:gateway_apikey_add")).status_code == 200
    page = admin_client.get(reverse("admin:gateway_apikey_change", args=[key.pk]))
    assert page.status_code == 200 and f"ck-{key.prefix}-…" in page.content.decode()


def test_node_page_lists_deployments_inline(
    admin_client: Client,
    make_node: Callable[..., Node],
    make_profile: Callable[..., ModelProfile],
    deploy: Callable[[Node, ModelProfile], Deployment],
) -> None:
    node = make_node()
    deploy(node, make_profile("inline-model"))
    page = admin_client.get(reverse("admin:nodes_node_change", args=[node.pk])).content.decode()
    assert "deployments-TOTAL_FORMS" in page and "inline-model" in page


def node_form(**overrides: str) -> dict[str, str]:
    data = {
        "name": "gpu9",
        "base_url": "http://10.0.0.9:11434",
        "api_kind": "ollama",
        "enabled": "on",
        "gpu_type": "H100",
        "gpu_count": "2",
        "vram_gb_per_gpu": "80",
        "max_concurrent": "8",
        "queue_size": "32",
        "restart_command": "",
        "labels": "{}",
        "deployments-TOTAL_FORMS": "0",
        "deployments-INITIAL_FORMS": "0",
        "deployments-MIN_NUM_FORMS": "0",
        "deployments-MAX_NUM_FORMS": "1000",
        "heal_events-TOTAL_FORMS": "0",
        "heal_events-INITIAL_FORMS": "0",
        "heal_events-MIN_NUM_FORMS": "0",
        "heal_events-MAX_NUM_FORMS": "0",
    }
    data.update(overrides)
    return data


def test_create_node_through_admin(admin_client: Client) -> None:
    response = admin_client.post(reverse("admin:nodes_node_add"), node_form())
    assert response.status_code == 302
    node = Node.objects.get(name="gpu9")
    assert (node.gpu_type, node.gpu_count, node.max_concurrent) == ("H100", 2, 8)
    assert node.state == "UNKNOWN"


def test_admin_shows_a_clear_message_for_a_bad_url(admin_client: Client) -> None:
    response = admin_client.post(reverse("admin:nodes_node_add"), node_form(base_url="gpu9:11434"))
    assert response.status_code == 200
    assert "Enter an http:// or https:// URL, e.g. http://gpu1:11434." in response.content.decode()
    assert not Node.objects.exists()


def test_admin_rejects_a_fallback_loop(
    admin_client: Client, make_profile: Callable[..., ModelProfile]
) -> None:
    small = make_profile("small")
    big = make_profile("big", fallback=small)
    data = {
        "model_id": "small",
        "upstream_model": "qwen3:32b",
        "display_name": "",
        "enabled": "on",
        "context_window": "8192",
        "max_output_tokens": "2048",
        "fallback": str(big.pk),
        "min_vram_gb": "0",
        "warmup_prompt": "",
        "keep_alive": "5m",
    }
    response = admin_client.post(reverse("admin:nodes_modelprofile_change", args=[small.pk]), data)
    assert response.status_code == 200
    assert "This fallback makes a loop: small → big → small." in response.content.decode()
    small.refresh_from_db()
    assert small.fallback is None


def test_admin_rejects_a_zero_context_window(admin_client: Client) -> None:
    data = {
        "model_id": "m",
        "upstream_model": "m",
        "context_window": "0",
        "max_output_tokens": "1",
        "min_vram_gb": "0",
        "keep_alive": "5m",
    }
    response = admin_client.post(reverse("admin:nodes_modelprofile_add"), data)
    assert response.status_code == 200
    assert "The context window must be at least 1 token." in response.content.decode()


def test_drain_and_undrain_actions(admin_client: Client, make_node: Callable[..., Node]) -> None:
    node = make_node()
    url = reverse("admin:nodes_node_changelist")
    admin_client.post(url, {"action": "drain", "_selected_action": [node.pk]})
    node.refresh_from_db()
    assert node.draining
    admin_client.post(url, {"action": "undrain", "_selected_action": [node.pk]})
    node.refresh_from_db()
    assert not node.draining


def test_probe_now_action_against_a_live_and_a_dead_node(
    admin_client: Client,
    make_node: Callable[..., Node],
    simulator: Callable[..., SimProcess],
) -> None:
    sim = simulator("--api", "ollama", "--model", "qwen3:32b")
    live = make_node("live", base_url=sim.url)
    dead = make_node("dead", base_url="http://127.0.0.1:9")
    response = admin_client.post(
        reverse("admin:nodes_node_changelist"),
        {"action": "probe_now", "_selected_action": [live.pk, dead.pk]},
        follow=True,
    )
    text = response.content.decode()
    assert "Node live: probe OK" in text and "Node dead: probe failed (cannot connect" in text
    live.refresh_from_db()
    dead.refresh_from_db()
    assert live.state == "READY" and live.last_probe_at is not None
    assert dead.state == "UNKNOWN" and dead.consecutive_failures == 1


def test_creating_a_key_in_admin_shows_the_secret_exactly_once(
    admin_client: Client, make_profile: Callable[..., ModelProfile]
) -> None:
    profile = make_profile()
    response = admin_client.post(
        reverse("admin:gateway_apikey_add"),
        {"name": "from-admin", "allowed_profiles": [profile.pk], "rpm_limit": "30"},
        follow=True,
    )
    text = response.content.decode()
    match = re.search(r'<code id="new-api-key">(ck-[^<]+)</code>', text)
    assert match, "the new key is shown after saving"
    secret = match.group(1)
    key = ApiKey.objects.get(name="from-admin")
    assert key.digest == hash_key(secret, settings.SECRET_KEY)
    assert key.rpm_limit == 30 and list(key.allowed_profiles.all()) == [profile]
    again = admin_client.get(reverse("admin:gateway_apikey_change", args=[key.pk]))
    assert secret not in again.content.decode()


def test_revoke_action(admin_client: Client) -> None:
    key = apikey_create(name="to-revoke").key
    admin_client.post(
        reverse("admin:gateway_apikey_changelist"),
        {"action": "revoke", "_selected_action": [key.pk]},
    )
    key.refresh_from_db()
    assert key.status() == "revoked"


def test_dashboard_requires_login_and_lists_nodes(
    client: Client, admin_client: Client, make_node: Callable[..., Node]
) -> None:
    make_node("listed-node")
    assert client.get("/").status_code == 302
    page = admin_client.get("/")
    assert page.status_code == 200 and "listed-node" in page.content.decode()


@pytest.mark.parametrize("model", ["proberecord", "healevent", "gpusample"])
def test_history_pages_render(admin_client: Client, model: str) -> None:
    assert admin_client.get(reverse(f"admin:nodes_{model}_changelist")).status_code == 200


def test_node_list_shows_the_live_weight_and_gpus(
    admin_client: Client, make_node: Callable[..., Node], redis_client: object
) -> None:
    from nodes import telemetry_store

    make_node("hot", gpu_type="H100")
    telemetry_store.publish(
        "hot",
        {"nvml": True, "error": "", "gpus": [{"utilisation_gpu_pct": 50, "temperature_c": 71}]},
    )
    page = admin_client.get(reverse("admin:nodes_node_changelist")).content.decode()
    # 380 × (1 − 0.5 × 0.6) × (1 − 6/30) = 212.8
    assert "212.8" in page and "50% busy, 71 °C" in page


def test_adding_a_prefetch_deployment_in_admin_schedules_its_warmup(
    admin_client: Client,
    make_node: Callable[..., Node],
    make_profile: Callable[..., ModelProfile],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scheduled: list[list[int]] = []
    monkeypatch.setattr("nodes.admin.schedule_prefetch_warmup", scheduled.append)
    node, profile = make_node(), make_profile(prefetch=True)
    response = admin_client.post(
        reverse("admin:nodes_deployment_add"), {"node": node.pk, "profile": profile.pk}
    )
    assert response.status_code == 302
    assert scheduled == [[Deployment.objects.get().pk]]
