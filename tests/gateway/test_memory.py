"""A burst of hostile-sized bodies does not leave the gateway process large: what the bodies
took is given back when they are answered (clawdbot_site/memory.py). `make bench` reports the
same with bigger bodies."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.gateway.world import HELLO, World, build
from tests.gateways import GatewayProcess
from tests.simulators import SimProcess

pytestmark = pytest.mark.slow  # real servers and processes

FAST = ("--api", "ollama", "--model", "qwen3:32b", "--zero-latency")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def world(gateway: GatewayProcess, simulator: Callable[..., SimProcess]) -> World:
    return build(gateway, {"gpu1": simulator(*FAST)})


def test_large_bodies_are_given_back_when_answered(world: World) -> None:
    pid = world.gateway.proc.pid
    chat = world.base_url + "/chat/completions"
    with httpx.Client(headers=world.headers(), timeout=60) as client:
        for _ in range(20):  # settle the process at its working size first
            assert client.post(chat, json={"model": "qwen3-32b", "messages": HELLO}).is_success
        baseline = rss_mb(pid)
        content = "word " * (4 * 1024 * 1024 // 5)  # about 4 MB: past the context window
        body = {"model": "qwen3-32b", "messages": [{"role": "user", "content": content}]}
        with ThreadPoolExecutor(6) as pool:
            for _ in range(3):
                answers = list(pool.map(lambda _: client.post(chat, json=body), range(6)))
                assert {a.status_code for a in answers} == {400}  # context_length_exceeded
                del answers
        deadline = time.monotonic() + 10
        while rss_mb(pid) > baseline + 30 and time.monotonic() < deadline:
            time.sleep(0.1)  # bounded wait for the last requests' closing work
    assert rss_mb(pid) <= baseline + 30, f"{baseline:.0f} MB before, {rss_mb(pid):.0f} MB after"
