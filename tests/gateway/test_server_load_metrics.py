"""The server-reported load in /metrics: per node, from the hash the scrape keeps in Redis; a
node with none (no gauges, or not read lately) is left out rather than shown idle."""

from __future__ import annotations

from types import SimpleNamespace

import redis
from prometheus_client.parser import text_string_to_metric_families

from clawdbot_site.redis_client import async_client
from gateway import metrics
from nodes import server_load_store
from nodes.server_load import ServerLoad


def _node(name: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, state="READY", routable=True, weight=1.0)


async def test_metrics_show_each_servers_own_load(redis_client: redis.Redis) -> None:
    server_load_store.publish("vllm1", ServerLoad(running=3, waiting=7, kv=0.7), at_ms=1)
    server_load_store.publish("tgi1", ServerLoad(running=1, waiting=0, kv=None), at_ms=1)
    names = ("vllm1", "tgi1", "ollama1")
    snapshot = SimpleNamespace(version=1, nodes={n: _node(n) for n in names}, routes={})
    data = await metrics.fetch(async_client(), snapshot, now_ms=0)
    samples = {
        (sample.name, sample.labels["node"]): sample.value
        for family in text_string_to_metric_families(metrics.render(data).decode())
        for sample in family.samples
        if sample.name.startswith(("clawdbot_node_server_", "clawdbot_node_kv_"))
    }
    assert samples == {
        ("clawdbot_node_server_requests_running", "vllm1"): 3.0,
        ("clawdbot_node_server_requests_waiting", "vllm1"): 7.0,
        ("clawdbot_node_kv_cache_usage", "vllm1"): 0.7,
        ("clawdbot_node_server_requests_running", "tgi1"): 1.0,
        ("clawdbot_node_server_requests_waiting", "tgi1"): 0.0,
    }
