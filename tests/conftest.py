"""A small named world for the tests: nodes, profiles, keys, an admin, simulator processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from clawdbot_site import redis_keys
from gateway.services import CreatedKey, apikey_create
from nodes.models import Deployment, ModelProfile, Node

if TYPE_CHECKING:
    from tests.gateways import GatewayProcess
    from tests.simulators import SimProcess


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    clean_gateway_state(client)
    yield client
    clean_gateway_state(client)
    client.close()


@pytest.fixture
def admin_user(db: None) -> User:
    return User.objects.create_superuser("root", "root@example.com", "correct-horse-battery")


@pytest.fixture
def admin_client(admin_user: User) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def make_node(db: None) -> Callable[..., Node]:
    def make(name: str = "gpu1", **fields: Any) -> Node:
        defaults: dict[str, Any] = {
            "base_url": "http://127.0.0.1:9",
            "api_kind": "ollama",
            "gpu_type": "A100",
            "vram_gb_per_gpu": 80,
        }
        defaults.update(fields)
        node = Node(name=name, **defaults)
        node.full_clean()
        node.save()
        return node

    return make


@pytest.fixture
def make_profile(db: None) -> Callable[..., ModelProfile]:
    def make(model_id: str = "qwen3-32b", **fields: Any) -> ModelProfile:
        defaults: dict[str, Any] = {
            "upstream_model": "qwen3:32b",
            "context_window": 8192,
            "max_output_tokens": 2048,
        }
        defaults.update(fields)
        profile = ModelProfile(model_id=model_id, **defaults)
        profile.full_clean()
        profile.save()
        return profile

    return make


@pytest.fixture
def deploy(db: None) -> Callable[[Node, ModelProfile], Deployment]:
    def make(node: Node, profile: ModelProfile) -> Deployment:
        return Deployment.objects.create(node=node, profile=profile)

    return make


@pytest.fixture
def api_key(db: None) -> CreatedKey:
    return apikey_create(name="tests")


@pytest.fixture
def simulator() -> Iterator[Callable[..., SimProcess]]:
    """Start simulator processes; every one started is stopped after the test."""
    from tests.simulators import simulators

    with simulators() as start:
        yield start


def clean_gateway_state(client: redis.Redis) -> None:
    """Forget shared data- and control-plane state, but never the routing version: gateways
    compare it with their snapshot, and a version that went backwards could look current."""
    for pattern in redis_keys.TRANSIENT_PATTERNS:
        keys = list(client.scan_iter(pattern, count=500))
        if keys:
            client.delete(*keys)


@pytest.fixture(scope="session")
def gateway_process(django_db_setup: None, django_db_blocker: Any) -> Iterator[GatewayProcess]:
    from tests.gateways import GatewayProcess

    gateway = GatewayProcess()
    yield gateway
    gateway.stop()


@pytest.fixture
def gateway(gateway_process: GatewayProcess, transactional_db: None) -> Iterator[GatewayProcess]:
    """The shared gateway process, with a clean data-plane state in Redis."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    clean_gateway_state(client)
    yield gateway_process
    clean_gateway_state(client)
    client.close()


# Fixtures that bring a database, Redis or a process: a test using any of them is slow.
SLOW_FIXTURES = frozenset(
    {
        "db",
        "transactional_db",
        "django_db_setup",
        "redis_client",
        "simulator",
        "gateway_process",
        "admin_client",
        "client",
        "live_server",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark as slow what needs a server; `pytest -m "not slow"` then runs the pure tests
    (translation, validation, policy) alone, in seconds."""
    slow = pytest.mark.slow
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if item.get_closest_marker("django_db") or names & SLOW_FIXTURES:
            item.add_marker(slow)
