"""The control plane for real: a Celery worker and beat probing simulator processes every
half second, a gateway process routing on what they decide, a node agent restarting a
backend, and fake NVML telemetry moving the routing weights."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from nodes.models import Deployment, HealEvent, ModelProfile, Node, ProbeRecord
from tests.agents import AgentProcess, fake_gpus
from tests.gateways import GatewayProcess, free_port
from tests.simulators import SimProcess, start_simulator
from tests.workers import CeleryProcess

pytestmark = pytest.mark.slow  # real servers and processes

INTERVAL_S = 0.5
FAST_CONTROL = {
    "CLAWDBOT_PROBE_INTERVAL_S": str(INTERVAL_S),
    "CLAWDBOT_TELEMETRY_INTERVAL_S": str(INTERVAL_S),
    "CLAWDBOT_PROBE_TIMEOUT_S": "1",
    "CLAWDBOT_HEAL_WAIT_S": "20",
}
SIM_ARGS = ("--api", "ollama", "--model", "qwen3:32b", "--zero-latency")


@pytest.fixture
def control_plane(transactional_db: None, redis_client: object) -> Iterator[CeleryProcess]:
    worker = CeleryProcess("worker", env=FAST_CONTROL)
    beat = CeleryProcess("beat", env=FAST_CONTROL)
    yield worker
    beat.stop()
    worker.stop()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until `condition` held (bounded polling of observable state)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def state(name: str) -> str:
    return Node.objects.get(name=name).state


def ready_nodes(gateway: GatewayProcess) -> int:
    return int(httpx.get(gateway.url + "/readyz", timeout=5).json().get("ready_nodes", -1))


def make_node(port: int, **fields: object) -> Node:
    profile = ModelProfile.objects.create(
        model_id="qwen3-32b",
        upstream_model="qwen3:32b",
        context_window=8192,
        max_output_tokens=1024,
        prefetch=True,
    )
    node = Node.objects.create(
        name="gpu1",
        base_url=f"http://127.0.0.1:{port}",
        api_kind="ollama",
        gpu_type="A100",
        state="READY",
        **fields,
    )
    Deployment.objects.create(node=node, profile=profile)
    return node


def test_a_killed_node_degrades_leaves_routing_and_returns_after_warmup(
    control_plane: None, gateway_process: GatewayProcess
) -> None:
    port = free_port()
    sim = start_simulator(*SIM_ARGS, "--port", str(port))
    try:
        make_node(port)
        gateway_process.wait_for_config()
        wait_for(lambda: ProbeRecord.objects.filter(ok=True).count() >= 2, 10, "probes run")
        assert ready_nodes(gateway_process) == 1

        sim.stop()
        degraded_after = wait_for(lambda: state("gpu1") == "DEGRADED", 10, "DEGRADED")
        # Three failed probes at 0.5 s intervals, plus one interval of phase.
        assert degraded_after <= 4 * INTERVAL_S + 1.0
        left_after = wait_for(lambda: ready_nodes(gateway_process) == 0, 5, "out of routing")
        assert left_after <= 1.0
        response = httpx.post(
            gateway_process.url + "/v1/chat/completions",
            json={"model": "qwen3-32b", "messages": []},
        )
        assert response.status_code in (400, 401)  # the data plane still answers cleanly

        sim = start_simulator(*SIM_ARGS, "--port", str(port))
        wait_for(lambda: state("gpu1") == "READY", 15, "READY again")
        # READY only after the prefetch profile was loaded again (an empty-messages preload).
        preloads = [
            r for r in sim.requests() if r["path"] == "/api/chat" and r["body"]["messages"] == []
        ]
        assert preloads and preloads[-1]["body"]["options"]["num_ctx"] == 8192
        wait_for(lambda: ready_nodes(gateway_process) == 1, 5, "back in routing")
        history = list(
            ProbeRecord.objects.filter(node__name="gpu1")
            .order_by("at")
            .values_list("ok", "state_after")
        )
        assert (False, "DEGRADED") in history and history[-1][0] is True
    finally:
        sim.stop()


def _restart_script(tmp_path: Path, port: int) -> tuple[Path, Path, Path]:
    runs = tmp_path / "restarts.log"
    pidfile = tmp_path / "sim.pid"
    script = tmp_path / "restart-backend.sh"
    args = " ".join([*SIM_ARGS, "--port", str(port)])
    script.write_text(
        "#!/bin/sh\n"
        f"echo restart >> {runs}\n"
        f"cd {Path(__file__).resolve().parents[2]}\n"
        f"setsid {sys.executable} -m simulator {args} >/dev/null 2>&1 &\n"
        f"echo $! > {pidfile}\n"
    )
    script.chmod(0o755)
    return script, runs, pidfile


def test_self_heal_restarts_the_backend_once_not_in_a_loop(
    control_plane: CeleryProcess, tmp_path: Path
) -> None:
    port = free_port()
    script, runs, pidfile = _restart_script(tmp_path, port)
    sim: SimProcess | None = start_simulator(*SIM_ARGS, "--port", str(port))
    fake = tmp_path / "gpus.json"
    fake.write_text(json.dumps(fake_gpus(util=10, temperature=50)))
    agent = AgentProcess("gpu1", tmp_path, fake)
    try:
        make_node(port, restart_command=str(script))
        wait_for(lambda: ProbeRecord.objects.filter(ok=True).exists(), 10, "probes run")
        assert sim is not None
        sim.stop()
        sim = None
        wait_for(lambda: state("gpu1") == "DEGRADED", 10, "DEGRADED")
        wait_for(
            lambda: HealEvent.objects.filter(outcome="recovered").exists(), 30, "heal recovered"
        )
        wait_for(lambda: state("gpu1") == "READY", 20, "READY after the restart")
        # A few more probe cycles: a healthy node is not restarted again.
        settle = ProbeRecord.objects.count() + 6
        wait_for(lambda: ProbeRecord.objects.count() >= settle, 10, "more probes")
        assert runs.read_text().splitlines() == ["restart"]
        event = HealEvent.objects.get()
        assert event.trigger == "turned DEGRADED" and event.action == f"restart: {script}"
        assert "answering again after" in event.detail
    finally:
        agent.stop()
        if sim is not None:
            sim.stop()
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass


def test_without_an_agent_the_heal_event_says_so(control_plane: None) -> None:
    port = free_port()
    sim = start_simulator(*SIM_ARGS, "--port", str(port))
    try:
        make_node(port, restart_command="systemctl restart ollama")
        wait_for(lambda: ProbeRecord.objects.filter(ok=True).exists(), 10, "probes run")
    finally:
        sim.stop()
    wait_for(lambda: HealEvent.objects.exists(), 10, "a heal event")
    event = HealEvent.objects.get()
    assert event.outcome == "skipped"
    assert "no agent is running for this node" in event.detail
    assert "clawdbot agent --node gpu1" in event.detail


def test_fake_nvml_telemetry_moves_the_routing_weight(
    control_plane: None,
    gateway_process: GatewayProcess,
    simulator: Callable[..., SimProcess],
    tmp_path: Path,
) -> None:
    sim = simulator(*SIM_ARGS)
    fake = tmp_path / "gpus.json"
    fake.write_text(json.dumps(fake_gpus(util=50, temperature=71)))
    agent = AgentProcess("gpu1", tmp_path, fake)
    try:
        make_node(sim.port)
        gateway_process.wait_for_config()

        def weight() -> float:
            for line in httpx.get(gateway_process.url + "/metrics").text.splitlines():
                if line.startswith('clawdbot_node_weight{node="gpu1"}'):
                    return float(line.split()[-1])
            return -1.0

        # A100 base 220 × load (1 − 0.5 × 0.6) × thermal (1 − (71 − 65) / 30) = 123.2
        wait_for(lambda: abs(weight() - 123.2) < 0.01, 10, "weight from telemetry")
        fake.write_text(json.dumps(fake_gpus(util=0, temperature=90)))
        # ≥ 85 °C: at most 30 % of base, 66.
        wait_for(lambda: abs(weight() - 66.0) < 0.01, 10, "hot GPU capped")
        agent.kill()
        # No telemetry once the reading expires: neutral factors, the base weight.
        wait_for(lambda: abs(weight() - 220.0) < 0.01, 30, "neutral without telemetry")
    finally:
        agent.stop()
