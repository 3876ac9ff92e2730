"""The console's live feed through the real ASGI application (origin check, session auth,
routing), the Redis channel layer and the control plane's services: staff sessions receive a
node's state change once it commits; anything else is refused at the handshake."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connections, transaction
from django.test import Client

from clawdbot_site import redis_keys
from clawdbot_site.asgi import application
from nodes import fake_nvml, live_events
from nodes.agent import collect_telemetry
from nodes.models import Node
from nodes.probe_runner import probe_and_record
from nodes.services import node_mark_state, nodes_set_draining

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_connections")]


@pytest.fixture
async def close_connections() -> AsyncIterator[None]:
    yield
    # The ORM ran in the async-to-sync thread: close its connection there, or the test
    # database cannot be dropped at the end of the run.
    await database_sync_to_async(connections.close_all)()


ORIGIN = (b"origin", b"http://127.0.0.1:8000")


def session_cookie(user: User) -> bytes:
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


async def feed(*headers: tuple[bytes, bytes]) -> tuple[WebsocketCommunicator, bool, Any]:
    communicator = WebsocketCommunicator(application, "/ws/console/", headers=list(headers))
    connected, code = await communicator.connect(timeout=5)
    if not connected:
        # As daphne does after a refused handshake: the consumer ends on the disconnect.
        await communicator.disconnect()
    return communicator, connected, code


async def test_an_anonymous_socket_is_refused() -> None:
    _, connected, code = await feed(ORIGIN)
    assert not connected and code == 4403


async def test_a_user_without_staff_rights_is_refused() -> None:
    user = await database_sync_to_async(User.objects.create_user)("ann", password="pw-12345678")
    cookie = await database_sync_to_async(session_cookie)(user)
    _, connected, code = await feed(ORIGIN, (b"cookie", cookie))
    assert not connected and code == 4403


async def test_a_staff_session_from_another_origin_is_refused() -> None:
    user = await database_sync_to_async(User.objects.create_superuser)("root", "r@x.io", "pw")
    cookie = await database_sync_to_async(session_cookie)(user)
    _, connected, _ = await feed((b"origin", b"http://evil.example"), (b"cookie", cookie))
    assert not connected


async def test_staff_see_a_state_change_after_it_commits_and_never_one_rolled_back(
    make_node: Callable[..., Node],
) -> None:
    user = await database_sync_to_async(User.objects.create_superuser)("root", "r@x.io", "pw")
    cookie = await database_sync_to_async(session_cookie)(user)
    node = await database_sync_to_async(make_node)("gpu1", state="READY")
    communicator, connected, _ = await feed(ORIGIN, (b"cookie", cookie))
    assert connected

    @database_sync_to_async
    def change(state: str, *, roll_back: bool) -> None:
        try:
            with transaction.atomic():
                node_mark_state(node=Node.objects.get(pk=node.pk), state=state, error="refused")
                if roll_back:
                    raise RuntimeError("undo")
        except RuntimeError:
            pass

    await change("DEGRADED", roll_back=True)
    await change("DOWN", roll_back=False)
    # The first event to arrive is the committed change: the rolled-back one was never sent.
    event = await communicator.receive_json_from(timeout=5)
    assert event["type"] == "node.state"
    assert (event["node"], event["previous"], event["state"]) == ("gpu1", "READY", "DOWN")
    assert event["error"] == "refused"

    await database_sync_to_async(nodes_set_draining)(node_ids=[node.pk], draining=True)
    event = await communicator.receive_json_from(timeout=5)
    assert (event["type"], event["node"], event["draining"]) == ("node.state", "gpu1", True)
    await communicator.disconnect()


async def test_a_telemetry_reading_reaches_staff_as_gpu_figures() -> None:
    user = await database_sync_to_async(User.objects.create_superuser)("root", "r@x.io", "pw")
    cookie = await database_sync_to_async(session_cookie)(user)
    communicator, connected, _ = await feed(ORIGIN, (b"cookie", cookie))
    assert connected
    reading = {
        "nvml": True,
        "error": "",
        "gpus": [
            {
                "index": 0,
                "name": "NVIDIA H200",
                "utilisation_gpu_pct": 97,
                "memory_used_mib": 70000,
                "memory_total_mib": 143771,
                "temperature_c": 61,
                "power_draw_w": 612.5,
                "power_limit_w": 700,
            }
        ],
    }
    await database_sync_to_async(live_events.send)(live_events.telemetry("h200", reading))
    event = await communicator.receive_json_from(timeout=5)
    assert event["type"] == "node.telemetry" and event["node"] == "h200"
    assert event["gpus"][0]["utilisation_pct"] == 97 and event["gpus"][0]["power_w"] == 612.5
    await communicator.disconnect()


async def staff_feed() -> WebsocketCommunicator:
    user = await database_sync_to_async(User.objects.create_superuser)("root", "r@x.io", "pw")
    cookie = await database_sync_to_async(session_cookie)(user)
    communicator, connected, _ = await feed(ORIGIN, (b"cookie", cookie))
    assert connected
    return communicator


async def test_a_probe_cycle_sends_its_results_and_the_nodes_load(
    make_node: Callable[..., Node], redis_client: redis.Redis
) -> None:
    # Port 9 refuses: the probe fails through the real probe path and state machine.
    node = await database_sync_to_async(make_node)("gpu1", base_url="http://127.0.0.1:9")
    later_ms = int(time.time() * 1000) + 60_000
    redis_client.zadd(redis_keys.slots("gpu1"), {"lease-1": later_ms, "lapsed": 1})
    redis_client.zadd(redis_keys.queue("gpu1"), {"place-1": later_ms, "place-2": later_ms})
    redis_client.hset(redis_keys.TIER, mapping={"tier": 2, "since": later_ms})
    communicator = await staff_feed()
    await database_sync_to_async(probe_and_record)([node], then=lambda outcome: None)
    event = await communicator.receive_json_from(timeout=5)
    assert (event["type"], event["node"], event["ok"]) == ("node.probe", "gpu1", False)
    assert event["error"]
    while event["type"] != "cluster.load":
        event = await communicator.receive_json_from(timeout=5)
    assert (event["nodes"], event["tier"]) == ({"gpu1": [1, 2]}, 2)
    await communicator.disconnect()


async def test_the_agents_reading_reaches_staff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_client: object
) -> None:
    gpus = [
        {
            "name": "NVIDIA H200",
            "uuid": "GPU-1",
            "util": 37,
            "mem_used_mib": 40960,
            "mem_total_mib": 143771,
            "temperature": 54,
            "power_w": 312.5,
            "power_limit_w": 700,
        }
    ]
    fake = tmp_path / "gpus.json"
    fake.write_text(json.dumps({"gpus": gpus}))
    monkeypatch.setenv(fake_nvml.FAKE_ENV, str(fake))
    communicator = await staff_feed()
    await database_sync_to_async(collect_telemetry)("gpu1")
    event = await communicator.receive_json_from(timeout=5)
    assert (event["type"], event["node"], event["nvml"]) == ("node.telemetry", "gpu1", True)
    gpu = event["gpus"][0]
    assert (gpu["utilisation_pct"], gpu["temperature_c"], gpu["power_w"]) == (37, 54, 312.5)
    await communicator.disconnect()


async def test_a_quiet_feed_stays_open_past_the_layers_blocking_read() -> None:
    # The consumer's blocking pop waits 5 s; a socket read timeout no longer than that closed
    # every idle console socket (redis-py 8's default is 5 s). Idle for longer, then an event.
    assert settings.CHANNEL_LAYER_SOCKET_TIMEOUT_S > RedisChannelLayer.brpop_timeout
    communicator = await staff_feed()
    await asyncio.sleep(RedisChannelLayer.brpop_timeout + 2)
    await database_sync_to_async(live_events.send)(
        live_events.telemetry("gpu1", {"nvml": False, "error": "no NVML"})
    )
    event = await communicator.receive_json_from(timeout=5)
    assert (event["type"], event["node"]) == ("node.telemetry", "gpu1")
    await communicator.disconnect()
