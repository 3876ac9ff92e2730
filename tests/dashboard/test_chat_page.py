"""The chat page (/ui): any logged-in user, the models they may use, and a key of the
session's own that works on /v1 for those models only, until it expires or the session
logs out."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dashboard.chat_keys import CHAT_KEY_TTL, Grant, grant_from_keys
from dashboard.models import ChatKey
from gateway.models import ApiKey
from gateway.services import apikey_create
from nodes.models import Deployment, ModelProfile, Node
from tests.gateways import GatewayProcess
from tests.simulators import SimProcess

CHAT = reverse("dashboard:chat")


def config_of(page: str) -> dict[str, object] | None:
    found = re.search(r'<script id="chat-config" type="application/json">(.*?)</script>', page)
    return json.loads(found.group(1)) if found else None


def test_who_may_use_which_model() -> None:
    assert grant_from_keys(True, []) == Grant(None)
    assert grant_from_keys(False, []) == Grant(frozenset())
    assert grant_from_keys(False, [frozenset({"a"}), frozenset({"b"})]) == Grant(
        frozenset({"a", "b"})
    )
    assert grant_from_keys(False, [frozenset({"a"}), frozenset()]) == Grant(None)  # unrestricted
    assert Grant(frozenset({"a"})).allows("a") and not Grant(frozenset({"a"})).allows("b")


@pytest.fixture
def ann(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user("ann", password="pw-12345678")


@pytest.fixture
def two_models(db: None) -> tuple[ModelProfile, ModelProfile]:
    return (
        ModelProfile.objects.create(
            model_id="qwen3-32b",
            upstream_model="qwen3:32b",
            context_window=8192,
            max_output_tokens=1024,
        ),
        ModelProfile.objects.create(
            model_id="llama-70b",
            upstream_model="llama3:70b",
            context_window=8192,
            max_output_tokens=1024,
        ),
    )


@pytest.mark.django_db
def test_a_user_without_models_gets_no_key(client: Client, ann: User) -> None:
    client.force_login(ann)
    response = client.get("/ui")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-testid="no-models"' in page and config_of(page) is None
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_the_page_needs_a_login(client: Client) -> None:
    response = client.get("/ui")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert client.post(reverse("dashboard:chat_key")).status_code == 302


@pytest.mark.django_db
def test_a_session_key_for_the_users_models_reused_then_revoked_at_logout(
    client: Client, ann: User, two_models: tuple[ModelProfile, ModelProfile]
) -> None:
    qwen, _ = two_models
    apikey_create(name="ann's app", owner=ann, models=[qwen.model_id])
    client.force_login(ann)
    before = timezone.now()
    config = config_of(client.get("/ui").content.decode())
    assert config is not None and config["models"] == ["qwen3-32b"]
    key = ApiKey.objects.get(prefix=config["prefix"])
    assert key.owner == ann and not key.is_staff_key
    assert [p.model_id for p in key.allowed_profiles.all()] == ["qwen3-32b"]
    assert key.expires_at is not None
    assert before + CHAT_KEY_TTL - timedelta(seconds=5) <= key.expires_at
    assert key.expires_at <= timezone.now() + CHAT_KEY_TTL
    assert str(config["key"]).startswith(f"ck-{key.prefix}-")
    bound = ChatKey.objects.get(key=key)
    assert bound.session_key == client.session.session_key
    # A reload, and the page's renewal call, hand back the same key.
    again = config_of(client.get("/ui").content.decode())
    assert again is not None and again["key"] == config["key"]
    renewed = client.post(reverse("dashboard:chat_key")).json()
    assert renewed["key"] == config["key"]
    # The user's own keys decide the models; the chat key is not one of them.
    assert ApiKey.objects.filter(owner=ann).count() == 2
    client.post(reverse("dashboard:logout"))
    key.refresh_from_db()
    assert key.is_revoked


@pytest.mark.django_db
def test_a_key_revoked_elsewhere_or_new_models_get_a_new_key(
    client: Client, ann: User, two_models: tuple[ModelProfile, ModelProfile]
) -> None:
    qwen, llama = two_models
    grant = apikey_create(name="ann's app", owner=ann, models=[qwen.model_id]).key
    client.force_login(ann)
    first = config_of(client.get("/ui").content.decode())
    assert first is not None
    grant.allowed_profiles.add(llama)
    second = config_of(client.get("/ui").content.decode())
    assert second is not None and second["prefix"] != first["prefix"]
    assert second["models"] == ["llama-70b", "qwen3-32b"]
    assert ApiKey.objects.get(prefix=first["prefix"]).is_revoked  # the old one goes
    ApiKey.objects.filter(prefix=second["prefix"]).update(revoked_at=timezone.now())
    third = config_of(client.get("/ui").content.decode())
    assert third is not None and third["prefix"] != second["prefix"]


@pytest.mark.django_db
def test_staff_may_use_every_model(
    admin_client: Client, two_models: tuple[ModelProfile, ModelProfile]
) -> None:
    config = config_of(admin_client.get("/ui").content.decode())
    assert config is not None and config["models"] == ["llama-70b", "qwen3-32b"]
    assert not ApiKey.objects.get(prefix=config["prefix"]).allowed_profiles.exists()


@pytest.mark.slow
def test_the_session_key_works_on_v1_for_the_users_models_only_until_it_expires(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess], ann: User
) -> None:
    sim = simulator("--api", "ollama", "--model", "qwen3:32b", "--zero-latency")
    qwen = ModelProfile.objects.create(
        model_id="qwen3-32b",
        upstream_model="qwen3:32b",
        context_window=8192,
        max_output_tokens=1024,
    )
    other = ModelProfile.objects.create(
        model_id="other", upstream_model="qwen3:32b", context_window=8192, max_output_tokens=1024
    )
    node = Node.objects.create(
        name="gpu1", base_url=sim.url, api_kind="ollama", gpu_type="A100", state="READY"
    )
    Deployment.objects.create(node=node, profile=qwen)
    Deployment.objects.create(node=node, profile=other)
    apikey_create(name="ann's app", owner=ann, models=["qwen3-32b"])
    browser = Client()
    browser.force_login(ann)
    config = config_of(browser.get("/ui").content.decode())
    assert config is not None
    gateway.wait_for_config()

    def chat(model: str) -> httpx.Response:
        with httpx.stream(
            "POST",
            gateway.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {config['key']}"},
            json={
                "model": model,
                "messages": [{"role": "user", "content": "Hello"}],
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            timeout=20,
        ) as response:
            response.read()
            return response

    ok = chat("qwen3-32b")
    assert ok.status_code == 200
    assert ok.headers["x-clawdbot-node"] == "gpu1"
    assert b"data: [DONE]" in ok.content and b'"usage"' in ok.content
    refused = chat("other")
    # Not this key's model: the same 404 as an unknown one (the gateway does not say which).
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "model_not_found"
    # Past its expiry (as when the session ends) the key is refused.
    key = ApiKey.objects.get(prefix=config["prefix"])
    key.expires_at = timezone.now() - timedelta(seconds=1)
    key.save(update_fields=["expires_at"])
    gateway.wait_for_config()
    expired = chat("qwen3-32b")
    assert expired.status_code == 401
