"""The GPU gauges in /metrics: per node and GPU index, from the node agents' telemetry in Redis
(here the agent's own task replaying the real H200 recording through the fake NVML)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from clawdbot_site.redis_client import async_client
from gateway import metrics
from nodes import agent, fake_nvml, telemetry_store

H200 = fake_nvml.RECORDINGS_DIR / "h200.jsonl"


def _node(name: str) -> SimpleNamespace:
    # What the renderer reads of a snapshot's NodeView.
    return SimpleNamespace(name=name, state="READY", routable=True, weight=1.0)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("clawdbot_gpu_")
    }


def _gpu(samples: dict[Any, float], name: str, node: str, gpu: str) -> float:
    return samples[(name, (("gpu", gpu), ("node", node)))]


async def test_metrics_show_each_gpu_the_agent_published(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(fake_nvml.FAKE_ENV, str(H200))
    agent.collect_telemetry("gpu-h200")
    [published] = telemetry_store.latest(["gpu-h200"]).values()
    assert published is not None
    gpu = published["gpus"][0]

    # What fetch reads of a routing snapshot: its version and nodes.
    snapshot = SimpleNamespace(
        version=1, nodes={n: _node(n) for n in ("gpu-h200", "gpu-silent")}, routes={}
    )
    data = await metrics.fetch(async_client(), snapshot, now_ms=0)
    samples = _samples(metrics.render(data).decode())

    assert _gpu(samples, "clawdbot_gpu_utilisation_ratio", "gpu-h200", "0") == pytest.approx(
        gpu["utilisation_gpu_pct"] / 100
    )
    mib = 1024 * 1024
    used = _gpu(samples, "clawdbot_gpu_memory_used_bytes", "gpu-h200", "0")
    assert used == gpu["memory_used_mib"] * mib
    total = _gpu(samples, "clawdbot_gpu_memory_total_bytes", "gpu-h200", "0")
    assert total == 143771 * mib
    temperature = _gpu(samples, "clawdbot_gpu_temperature_celsius", "gpu-h200", "0")
    assert temperature == gpu["temperature_c"]
    assert 39 <= temperature <= 61  # the range the real H200 went through
    assert _gpu(samples, "clawdbot_gpu_power_watts", "gpu-h200", "0") == gpu["power_draw_w"]
    assert _gpu(samples, "clawdbot_gpu_power_limit_watts", "gpu-h200", "0") == 700.0
    info = (("gpu", "0"), ("name", "NVIDIA H200"), ("node", "gpu-h200"))
    assert samples[("clawdbot_gpu_info", info)] == 1
    # A node whose agent never reported shows no GPU samples, not zeros.
    assert not [key for key in samples if ("node", "gpu-silent") in key[1]]

    # Once the reading expires (the agent stopped), its GPUs leave the families too.
    redis_client.delete(telemetry_store.telemetry_key("gpu-h200"))
    data = await metrics.fetch(async_client(), snapshot, now_ms=0)
    assert _samples(metrics.render(data).decode()) == {}


def test_fields_nvml_did_not_give_and_readings_without_nvml_are_left_out() -> None:
    data: dict[str, Any] = {
        "requests": {},
        "tokens": {},
        "duration": {},
        "ttft": {},
        "load": {},
        "ejected": set(),
        "nodes": [_node("a"), _node("b")],
        "telemetry": {
            "a": {
                "nvml": True,
                "gpus": [
                    {"index": 0, "name": "NVIDIA A10", "utilisation_gpu_pct": 50},
                    {"index": 1, "name": None, "temperature_c": 40, "power_draw_w": None},
                ],
            },
            "b": {"nvml": False, "error": "no NVML: Driver Not Loaded", "gpus": []},
        },
        "version": 1,
        "log_rejected": 0,
        "log_backlog": 0,
        "tier": 0,
        "error_rate": 0.0,
    }
    samples = _samples(metrics.render(data).decode())
    assert samples == {
        ("clawdbot_gpu_info", (("gpu", "0"), ("name", "NVIDIA A10"), ("node", "a"))): 1.0,
        ("clawdbot_gpu_info", (("gpu", "1"), ("name", "unknown"), ("node", "a"))): 1.0,
        ("clawdbot_gpu_utilisation_ratio", (("gpu", "0"), ("node", "a"))): 0.5,
        ("clawdbot_gpu_temperature_celsius", (("gpu", "1"), ("node", "a"))): 40.0,
    }
