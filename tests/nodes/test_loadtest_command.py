"""`clawdbot loadtest` through the console script's entry point, against a real gateway
process in front of a simulator process."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from clawdbot_site import cli
from tests.gateway.world import World, build
from tests.gateways import GatewayProcess, free_port
from tests.simulators import SimProcess

SIM = ("--api", "ollama", "--model", "qwen3:32b", "--preloaded", "--speed", "10")


@pytest.fixture
def world(gateway: GatewayProcess, simulator: Callable[..., SimProcess]) -> World:
    return build(gateway, {"gpu1": simulator(*SIM)})


def loadtest(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["clawdbot", "loadtest", *args])
    out, err = capsys.readouterr()
    assert isinstance(exit_.value.code, int)
    return exit_.value.code, out, err


def against(world: World, *args: str) -> list[str]:
    return ["--url", world.gateway.url, "--key", world.key, "--model", "qwen3-32b", *args]


def node_chats(world: World) -> list[dict[str, Any]]:
    # The simulator serves its control API on its main port too.
    url = world.nodes["gpu1"].base_url + "/_sim/requests"
    recorded: list[dict[str, Any]] = httpx.get(url, timeout=5).json()["requests"]
    return [r for r in recorded if r["path"] == "/api/chat"]


def test_a_run_within_its_thresholds(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    limits = ("--max-error-rate", "0", "--max-p95", "5", "--max-p99", "10s")
    code, out, _ = loadtest(capsys, *against(world, "-n", "30", "-c", "5", *limits))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith(
        f"loadtest    qwen3-32b at {world.gateway.url}/v1, not streamed, 5 clients, "
    )
    assert lines[1:5] == ["requests    30", "ok          30", "errors      0", "error rate  0.00%"]
    assert lines[5].startswith("throughput  ") and "completion tokens/s" in lines[5]
    assert lines[6].startswith("latency     p50 ")
    assert lines[7:9] == ["thresholds", "  ok        error rate 0.00% <= 0.00%"]
    assert lines[9].startswith("  ok        latency p95 ") and lines[9].endswith(" <= 5 s")
    assert lines[10].startswith("  ok        latency p99 ") and lines[10].endswith(" <= 10 s")
    assert len(lines) == 11
    assert len(node_chats(world)) == 30
    assert node_chats(world)[0]["body"]["options"]["num_predict"] == 32


def test_a_streamed_run_as_json_with_the_key_from_the_environment(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAWDBOT_API_KEY", world.key)
    args = ["--url", world.gateway.url, "--model", "qwen3-32b", "--stream", "--json"]
    code, out, _ = loadtest(capsys, *args, "-n", "20", "-c", "4", "--max-ttft-p95", "5")
    assert code == 0
    summary = json.loads(out)
    assert (summary["requests"], summary["ok"], summary["statuses"]) == (20, 20, {"200": 20})
    assert summary["stream"] is True and summary["passed"] is True
    assert 0 < summary["ttft_s"]["p95"] <= summary["latency_s"]["max"]
    assert summary["completion_tokens"] > 0 and summary["tokens_per_s"] > 0
    (check,) = summary["thresholds"]
    assert check["name"] == "max_ttft_p95_s" and check["passed"] is True
    assert all(chat["body"]["stream"] is True for chat in node_chats(world))


def test_for_a_duration(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = loadtest(capsys, *against(world, "--duration", "1s", "-c", "2", "--json"))
    summary = json.loads(out)
    assert code == 0 and summary["duration_s"] >= 1.0
    assert summary["requests"] == summary["ok"] == len(node_chats(world)) > 0


def test_a_failing_node_breaks_the_error_rate_threshold(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    control = world.nodes["gpu1"].base_url + "/_sim/control"
    httpx.post(control, json={"error_rate": 1.0}, timeout=5).raise_for_status()
    code, out, _ = loadtest(capsys, *against(world, "-n", "20", "--max-error-rate", "0.5%"))
    assert code == 1
    # The node's 500s, then the gateway's 503s once it has ejected the node.
    assert "ok          0\n" in out and "error rate  100.00%\n" in out
    (fail,) = [line for line in out.splitlines() if "FAIL" in line]
    assert fail.startswith("  FAIL      error rate 100.00% > 0.50% (")
    assert "500: " in fail
    assert "The model node failed: simulated failure (error_rate)" in out, "a first error shown"


def test_a_refused_key(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--url", world.gateway.url, "--key", "ck-nosuch-key", "--model", "qwen3-32b"]
    code, out, err = loadtest(capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith("clawdbot loadtest: the server refused the key (401: ")
    assert err.endswith("check --key or $CLAWDBOT_API_KEY\n")
    assert node_chats(world) == []


def test_a_model_the_key_may_not_use(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--url", world.gateway.url, "--key", world.key, "--model", "llama3-8b"]
    code, _, err = loadtest(capsys, *args)
    assert code == 2
    assert "the server offers no model 'llama3-8b' to this key (it offers: qwen3-32b)" in err


def test_nothing_listening(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = loadtest(capsys, "--url", url, "--key", "k", "--model", "m")
    assert code == 2 and out == ""
    assert err.startswith(f"clawdbot loadtest: cannot connect to {url}/v1 (")
    assert err.endswith("): is `clawdbot serve` running?\n")
