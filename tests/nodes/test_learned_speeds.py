"""What routing learned of a node's speed, as the admin shows it."""

from __future__ import annotations

import time

import pytest
import redis
from django.test import Client

from clawdbot_site import redis_keys
from nodes.learned_speeds import learned_speeds
from nodes.models import Node

pytestmark = pytest.mark.slow  # real Redis and database


def test_learned_speeds_per_model_for_one_node_only(redis_client: redis.Redis) -> None:
    now = time.time() * 1000
    redis_client.hset(
        redis_keys.speed("gpu1", "qwen3-32b"),
        mapping={"d": 31.5, "p": 2400, "n": 12, "t": now - 3000},
    )
    redis_client.hset(
        redis_keys.speed("gpu1", "Qwen/Qwen3-8B"), mapping={"d": 90, "p": 9000, "n": 2, "t": now}
    )
    redis_client.hset(
        redis_keys.speed("gpu10", "qwen3-32b"), mapping={"d": 1, "p": 1, "n": 1, "t": now}
    )
    speeds = learned_speeds("gpu1")
    assert [s.model for s in speeds] == ["Qwen/Qwen3-8B", "qwen3-32b"]
    text = speeds[1].describe()
    assert text.startswith("qwen3-32b: decode 31.5 tok/s, prefill 2,400 tok/s (12 samples, ")
    assert 2.5 < speeds[1].age_s < 60
    assert learned_speeds("gpu2") == []


def test_the_node_admin_page_shows_them(
    admin_client: Client, redis_client: redis.Redis, transactional_db: None
) -> None:
    node = Node.objects.create(name="gpu1", base_url="http://127.0.0.1:9", gpu_type="A100")
    page = admin_client.get(f"/admin/nodes/node/{node.pk}/change/").content.decode()
    assert "nothing yet: learned from the answers it gives" in page
    redis_client.hset(
        redis_keys.speed("gpu1", "qwen3-32b"),
        mapping={"d": 31.5, "p": 2400, "n": 12, "t": time.time() * 1000},
    )
    page = admin_client.get(f"/admin/nodes/node/{node.pk}/change/").content.decode()
    assert "qwen3-32b: decode 31.5 tok/s" in page


def test_the_node_admin_page_shows_its_prefix_cache(
    admin_client: Client, redis_client: redis.Redis, transactional_db: None
) -> None:
    node = Node.objects.create(name="gpu1", base_url="http://127.0.0.1:9", gpu_type="A100")
    page = admin_client.get(f"/admin/nodes/node/{node.pk}/change/").content.decode()
    assert "nothing yet: learned from the conversations it serves" in page
    redis_client.hset(
        redis_keys.prefix_cache("gpu1"),
        mapping={"rate": 12, "t": time.time() * 1000, "cap": 250_000, "occ": 3.25},
    )
    page = admin_client.get(f"/admin/nodes/node/{node.pk}/change/").content.decode()
    assert "holds about 250,000 tokens; takes in 1" in page  # about 12,000 tokens/s, fading
    assert "3.2 slots busy on average" in page
