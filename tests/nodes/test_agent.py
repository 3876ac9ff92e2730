"""The node agent as it runs on a GPU host: a real `clawdbot agent` Celery worker process,
sent tasks through Redis, against fake NVML and real simulator processes."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from clawdbot_site import redis_keys
from nodes import telemetry, telemetry_store
from nodes.management.commands.agent import node_in_database
from tests.agents import AgentProcess, _forget, fake_gpus
from tests.simulators import SimProcess

pytestmark = pytest.mark.slow  # real servers and processes


@pytest.fixture(scope="module")
def fake_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nvml") / "gpus.json"
    path.write_text(json.dumps(fake_gpus(util=30, temperature=50)))
    return path


@pytest.fixture(scope="module")
def agent(fake_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    _forget("gpu1")
    process = AgentProcess("gpu1", tmp_path_factory.mktemp("agent"), fake_file)
    try:
        yield process
    finally:
        process.stop()
        _forget("gpu1")


def test_the_agent_says_what_it_serves_and_beats(agent: AgentProcess, fake_file: Path) -> None:
    first = agent.output().splitlines()[0]
    assert first == (
        f"Clawdbot node agent for gpu1: queue node.gpu1; NVML fake, from "
        f"CLAWDBOT_FAKE_NVML={fake_file}: 2 GPUs (NVIDIA H200 ×2), driver 550.54.15"
    )
    assert "warning: cannot read the database (no such table: nodes_node)" in agent.output()
    assert telemetry_store.agents_alive(["gpu1", "gpu-nobody"]) == {"gpu1"}


def test_telemetry_lands_in_redis_and_follows_the_gpus(
    agent: AgentProcess, fake_file: Path
) -> None:
    summary = agent.send("collect_telemetry", "gpu1")

    assert summary == {
        "node": "gpu1",
        "nvml": True,
        "gpus": 2,
        "utilisation": 0.3,
        "temperature_c": 50.0,
        "read_ms": summary["read_ms"],
        "error": "",
    }
    reading = telemetry_store.latest(["gpu1"])["gpu1"]
    assert reading is not None
    assert [g["uuid"] for g in reading["gpus"]] == ["GPU-0", "GPU-1"]
    assert reading["gpus"][0]["power_draw_w"] == 250.0
    assert 0 < telemetry_store.sync_client().pttl(redis_keys.telemetry("gpu1")) <= 15000

    fake_file.write_text(json.dumps(fake_gpus(util=90, temperature=88)))
    try:
        agent.send("collect_telemetry", "gpu1")
        hot = telemetry_store.summarise(telemetry_store.latest(["gpu1"])["gpu1"])
    finally:
        fake_file.write_text(json.dumps(fake_gpus(util=30, temperature=50)))
    assert hot is not None
    assert (hot.utilisation, hot.temperature_c) == (0.9, 88.0)


def test_restart_brings_a_down_backend_back(
    agent: AgentProcess, simulator: Callable[..., SimProcess], tmp_path: Path
) -> None:
    sim = simulator("--refuse-connections")
    # The "restart" returns at once and the server comes back a moment later, as
    # `systemctl restart ollama` does: the agent must poll until it answers.
    script = tmp_path / "restart.sh"
    script.write_text(
        "#!/bin/sh\n"
        "echo restarting the backend\n"
        f"(sleep 0.5; {sys.executable} -c 'import httpx; httpx.post("
        f'"{sim.control_url}/_sim/control", json={{"refuse_connections": False}})\') '
        ">/dev/null 2>&1 &\n"
        "echo restart issued\n"
    )
    script.chmod(0o755)

    result = agent.send("restart_backend", "gpu1", str(script), sim.url, "ollama", wait_s=15)

    assert result == {
        "ok": True,
        "was_up": False,
        "exit_status": 0,
        "output": "restarting the backend\nrestart issued\n",
        "recovered_after_s": result["recovered_after_s"],
        "error": "",
    }
    assert 0.4 < result["recovered_after_s"] < 15


def test_restart_of_an_answering_openai_backend(
    agent: AgentProcess, simulator: Callable[..., SimProcess]
) -> None:
    sim = simulator("--api", "openai")

    result = agent.send("restart_backend", "gpu1", "true", sim.url, "openai", wait_s=5)

    assert (result["ok"], result["was_up"], result["exit_status"]) == (True, True, 0)


def test_a_failing_restart_command_is_reported_at_once(agent: AgentProcess) -> None:
    started = time.monotonic()

    result = agent.send(
        "restart_backend", "gpu1", "echo cannot restart >&2; exit 3", "http://127.0.0.1:9", "ollama"
    )

    assert result == {
        "ok": False,
        "was_up": False,
        "exit_status": 3,
        "output": "cannot restart\n",
        "recovered_after_s": None,
        "error": "the restart command exited with status 3",
    }
    assert time.monotonic() - started < 10  # not the 120 s wait for a backend


def test_a_hanging_restart_command_is_killed(agent: AgentProcess) -> None:
    result = agent.send(
        "restart_backend",
        "gpu1",
        "echo stuck; sleep 60",
        "http://127.0.0.1:9",
        "ollama",
        command_timeout_s=0.5,
    )

    assert (result["ok"], result["exit_status"], result["output"]) == (False, None, "stuck\n")
    assert result["error"] == "the restart command did not finish within 0.5 s and was killed"


def test_no_restart_command_runs_nothing(agent: AgentProcess) -> None:
    result = agent.send("restart_backend", "gpu1", "", "http://127.0.0.1:9", "ollama")
    assert (result["ok"], result["exit_status"]) == (False, None)
    assert result["error"] == "no restart command is configured for this node"


def test_warm_models_preloads_on_the_node(
    agent: AgentProcess, simulator: Callable[..., SimProcess]
) -> None:
    sim = simulator("--model", "qwen3:32b", "--cold-load-ms", "300")
    target = {
        "base_url": sim.url,
        "api_kind": "ollama",
        "upstream_model": "qwen3:32b",
        "context_window": 8192,
        "keep_alive": "10m",
        "warmup_prompt": "Say hi",
    }

    outcomes = agent.send("warm_models", "gpu1", [target, {"upstream_model": "llama3:8b"}])

    warmed, broken = outcomes
    assert (warmed["model"], warmed["ok"], warmed["error"]) == ("qwen3:32b", True, "")
    assert warmed["load_ms"] >= 250  # the simulated cold load
    assert isinstance(warmed["prompt_ms"], int)
    assert broken["ok"] is False
    assert broken["error"].startswith("missing fields: api_kind, base_url, context_window")
    preloads = [
        r["body"]
        for r in sim.requests()
        if r["path"] == "/api/chat" and r["body"].get("messages") == []
    ]
    assert preloads == [
        {
            "model": "qwen3:32b",
            "messages": [],
            "stream": False,
            "keep_alive": "10m",
            "options": {"num_ctx": 8192},
        }
    ]
    loaded = sim.stats()["loaded_models"]
    assert [(m["name"], m["num_ctx"]) for m in loaded] == [("qwen3:32b", 8192)]


def test_a_dead_agents_telemetry_expires(
    fake_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _forget("gpu3")
    process = AgentProcess("gpu3", tmp_path_factory.mktemp("agent3"), fake_file)
    try:
        process.send("collect_telemetry", "gpu3", ttl_s=1.5)
        assert telemetry_store.latest(["gpu3"])["gpu3"] is not None

        process.kill()

        deadline = time.monotonic() + 10
        while telemetry_store.latest(["gpu3"])["gpu3"] is not None:
            assert time.monotonic() < deadline, "a dead agent's numbers stayed in Redis"
            time.sleep(0.1)  # bounded poll on the key's TTL
    finally:
        process.stop()
        _forget("gpu3")


def test_an_agent_without_nvml_reports_it_and_keeps_working(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    if telemetry.read()["nvml"]:
        pytest.skip("this machine has a working NVIDIA driver")
    _forget("gpu2")
    process = AgentProcess("gpu2", tmp_path_factory.mktemp("agent2"), fake_file=None)
    try:
        first = process.output().splitlines()[0]
        assert first.startswith(
            "Clawdbot node agent for gpu2: queue node.gpu2; NVML unavailable: no NVML: "
        )
        for _ in range(2):
            summary = process.send("collect_telemetry", "gpu2")
            assert (summary["nvml"], summary["gpus"], summary["utilisation"]) == (False, 0, None)
            assert summary["error"].startswith("no NVML: ")
        reading = telemetry_store.latest(["gpu2"])["gpu2"]
        assert reading is not None
        assert (reading["nvml"], reading["error"]) == (False, summary["error"])
        assert telemetry_store.summarise(reading) is None
        # Other work still runs on the same worker.
        restart = process.send("restart_backend", "gpu2", "", "http://127.0.0.1:9", "ollama")
        assert restart["error"] == "no restart command is configured for this node"

        process.stop()  # a clean stop withdraws the heartbeat at once

        assert telemetry_store.agents_alive(["gpu2"]) == set()
        assert "Traceback" not in process.output()
    finally:
        process.stop()
        _forget("gpu2")


def test_the_command_refuses_a_bad_node_name() -> None:
    with pytest.raises(CommandError, match=r"--node 'GPU 1': Use 1-63 lowercase letters"):
        call_command("agent", "--node", "GPU 1")


@pytest.mark.django_db(transaction=True)
def test_the_command_refuses_a_node_the_database_does_not_know(
    make_node: Callable[..., Any],
) -> None:
    make_node("gpu1")
    assert node_in_database("gpu1") == (True, "")
    assert node_in_database("gpu9") == (False, "")
    with pytest.raises(CommandError, match="there is no node named 'gpu9' in the database"):
        call_command("agent", "--node", "gpu9")
