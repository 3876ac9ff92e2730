"""The readiness checklist against real components: a gateway process (daphne), simulator
nodes as processes, Redis, PostgreSQL and, for `serve --production`, the real command. Each
check is shown passing on a healthy cluster and failing for what it guards against."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from django.test import override_settings

from gateway.services import apikey_create
from nodes import telemetry_store
from nodes.agent import collect_telemetry
from nodes.models import Deployment, ModelProfile, Node
from readiness.checks import CHECKS, Context
from readiness.models import ReadinessCheck, ReadinessResult, ReadinessRun
from readiness.runner import run_checklist
from tests.gateways import GatewayProcess, database_url, free_port
from tests.simulators import SimProcess

ROOT = Path(__file__).resolve().parent.parent.parent
FAST_SMOKE = {"CLAWDBOT_READY_SMOKE_REQUESTS": 20, "CLAWDBOT_READY_SMOKE_MAX_TOKENS": 4}


def check(key: str, url: str = "http://127.0.0.1:9", **ctx: Any) -> Any:
    context = Context(
        start_gateway=lambda: url,
        smoke_key=ctx.get("smoke_key", ""),
        smoke_prefix=ctx.get("smoke_prefix", ""),
    )
    if ctx.get("smoke_sent"):
        context.smoke_sent = True
    return CHECKS[key](context)


def serving_node(name: str, sim: SimProcess) -> tuple[Node, ModelProfile]:
    """A READY Ollama node on `sim` (an A100 with room for a burst) serving `qwen3-32b`."""
    node = Node.objects.create(
        name=name,
        base_url=sim.url,
        api_kind="ollama",
        gpu_type="A100",
        vram_gb_per_gpu=80,
        max_concurrent=32,
        queue_size=64,
        state="READY",
    )
    profile = ModelProfile.objects.create(
        model_id="qwen3-32b",
        upstream_model="qwen3:32b",
        context_window=8192,
        max_output_tokens=1024,
    )
    Deployment.objects.create(node=node, profile=profile)
    return node, profile


@pytest.fixture
def cluster(
    simulator: Callable[..., SimProcess], transactional_db: None
) -> Iterator[dict[str, Any]]:
    """One READY Ollama node (a simulated A100, 40960-token model) serving one profile."""
    sim = simulator("--model", "qwen3:32b", "--context-length", "40960", "--gpu-type", "A100")
    node, profile = serving_node("sim1", sim)
    yield {"sim": sim, "node": node, "profile": profile}
    telemetry_store.forget_agent(node.name)


@override_settings(**FAST_SMOKE)
def test_a_healthy_cluster_passes_and_the_run_is_stored(
    cluster: dict[str, Any], gateway: GatewayProcess
) -> None:
    seen: list[str] = []
    report = run_checklist(
        trigger="test", gateway_url=gateway.url, progress=lambda f: seen.append(f.key)
    )
    statuses = {f.key: (f.status, f.reason) for f in report.findings}
    failing = {k: v for k, v in statuses.items() if v[0] == "fail"}
    assert report.passed, failing
    assert seen == [f.key for f in report.findings] and len(seen) == 14
    for key in (
        "database",
        "redis",
        "upstreams-listening",
        "models-listed",
        "context-windows",
        "nodes-ready",
        "auth-enforced",
        "metrics-router-up",
        "smoke-load",
        "latency-p95",
    ):
        assert statuses[key][0] == "pass", (key, statuses[key])
    # Not applicable here, and said so.
    assert statuses["gpu-memory"] == ("skip", statuses["gpu-memory"][1])
    assert "CLAWDBOT_SHARED_MODEL_DIR" in statuses["shared-storage"][1]
    assert statuses["smoke-load"][1].startswith("0/20 failed")
    assert report.run_id is not None
    run = ReadinessRun.objects.get(pk=report.run_id)
    assert run.state == "passed" and run.finished_at is not None
    assert run.results.count() == 14
    # The smoke key is gone once the run ends.
    smoke = run.results.get(check_key="smoke-load")
    assert smoke.details["load"]["qwen3-32b"]["requests"] == 20


def test_a_disabled_check_is_skipped(cluster: dict[str, Any], gateway: GatewayProcess) -> None:
    run_checklist(trigger="test", gateway_url="http://127.0.0.1:9")  # creates the rows
    ReadinessCheck.objects.filter(key="smoke-load").update(enabled=False)
    report = run_checklist(trigger="test", gateway_url=gateway.url)
    smoke = next(f for f in report.findings if f.key == "smoke-load")
    assert smoke.status == "skip" and "disabled" in smoke.reason
    latency = next(f for f in report.findings if f.key == "latency-p95")
    assert latency.status == "skip" and "smoke load is disabled" in latency.reason
    assert report.passed


def test_nodes_configured(
    cluster: dict[str, Any], make_profile: Callable[..., ModelProfile]
) -> None:
    assert check("nodes-configured").status == "pass"
    make_profile("orphan")
    verdict = check("nodes-configured")
    assert verdict.status == "fail" and "orphan has no enabled node" in verdict.reason
    Node.objects.update(enabled=False)
    assert "no enabled node" in check("nodes-configured").reason


def test_upstreams_listening(cluster: dict[str, Any]) -> None:
    assert check("upstreams-listening").status == "pass"
    Node.objects.create(
        name="gone",
        base_url=f"http://127.0.0.1:{free_port()}",
        api_kind="ollama",
        gpu_type="A100",
    )
    verdict = check("upstreams-listening")
    assert verdict.status == "fail" and verdict.reason.startswith("gone: cannot connect")


def test_models_listed(cluster: dict[str, Any]) -> None:
    assert check("models-listed").status == "pass"
    other = ModelProfile.objects.create(
        model_id="llama", upstream_model="llama3:8b", context_window=8192, max_output_tokens=512
    )
    Deployment.objects.create(node=cluster["node"], profile=other)
    verdict = check("models-listed")
    assert verdict.status == "fail" and "llama3:8b" in verdict.reason


def test_context_windows_ollama(cluster: dict[str, Any]) -> None:
    assert check("context-windows").status == "pass"
    ModelProfile.objects.update(context_window=65536)
    verdict = check("context-windows")
    assert verdict.status == "fail" and "supports 40960" in verdict.reason


def test_context_windows_vllm(simulator: Callable[..., SimProcess], transactional_db: None) -> None:
    sim = simulator("--api", "openai", "--model", "Qwen/Qwen3-8B", "--context-length", "8192")
    node = Node.objects.create(
        name="vllm1", base_url=sim.url, api_kind="openai", gpu_type="L4", state="READY"
    )
    profile = ModelProfile.objects.create(
        model_id="qwen3-8b",
        upstream_model="Qwen/Qwen3-8B",
        context_window=8192,
        max_output_tokens=1024,
    )
    Deployment.objects.create(node=node, profile=profile)
    assert check("context-windows").status == "pass"
    ModelProfile.objects.update(context_window=16384)
    verdict = check("context-windows")
    assert verdict.status == "fail" and "serves 8192 (max_model_len)" in verdict.reason


def test_nodes_ready(cluster: dict[str, Any]) -> None:
    assert check("nodes-ready").status == "pass"
    Node.objects.update(state="DEGRADED")
    verdict = check("nodes-ready")
    assert verdict.status == "fail" and verdict.reason == "sim1 is DEGRADED"


def reading(used_mib: int) -> dict[str, Any]:
    gpu = {"index": 0, "memory_used_mib": used_mib, "memory_total_mib": 81920}
    return {"nvml": True, "gpus": [gpu], "error": None, "read_ms": 1}


def test_gpu_memory(cluster: dict[str, Any]) -> None:
    assert check("gpu-memory").status == "skip"  # no agent reports
    telemetry_store.publish("sim1", reading(40000))
    assert check("gpu-memory").status == "pass"
    telemetry_store.publish("sim1", reading(80000))
    verdict = check("gpu-memory")
    assert verdict.status == "fail" and "sim1 GPU 0 uses 98 %" in verdict.reason
    with override_settings(CLAWDBOT_READY_MAX_GPU_MEMORY_PCT=99):
        assert check("gpu-memory").status == "pass"


def test_self_heal_commands_as_the_agent_reports_them(cluster: dict[str, Any]) -> None:
    assert check("self-heal-commands").status == "skip"
    Node.objects.update(restart_command="systemctl-is-not-here restart ollama")
    silent = check("self-heal-commands")
    assert silent.status == "fail" and "no report from its agent" in silent.reason
    # The agent's own task, run here as on the GPU host, publishes what it found.
    collect_telemetry("sim1", restart_command="systemctl-is-not-here restart ollama")
    missing = check("self-heal-commands")
    assert missing.status == "fail" and "'systemctl-is-not-here' is not found" in missing.reason
    Node.objects.update(restart_command="sh -c 'kill -HUP 1'")
    collect_telemetry("sim1", restart_command="sh -c 'kill -HUP 1'")
    assert check("self-heal-commands").status == "pass"


def test_shared_storage(cluster: dict[str, Any], tmp_path: Path) -> None:
    assert check("shared-storage").status == "skip"
    with override_settings(CLAWDBOT_SHARED_MODEL_DIR=str(tmp_path)):
        verdict = check("shared-storage")
        assert verdict.status == "pass", verdict.reason
        assert list(tmp_path.iterdir()) == []  # its probe file is removed
    with override_settings(CLAWDBOT_SHARED_MODEL_DIR=str(tmp_path / "not-mounted")):
        assert "is not a directory" in check("shared-storage").reason
    if os.geteuid() != 0:  # root writes anywhere
        tmp_path.chmod(0o500)
        try:
            with override_settings(CLAWDBOT_SHARED_MODEL_DIR=str(tmp_path)):
                assert check("shared-storage").status == "fail"
        finally:
            tmp_path.chmod(0o700)


class OpenDoor(BaseHTTPRequestHandler):
    """A server that answers everything with 200, and says its router is down."""

    def do_GET(self) -> None:
        body = b"clawdbot_router_up 0\n" if self.path == "/metrics" else b'{"data": []}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def open_door() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), OpenDoor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_auth_enforced_and_router_up(
    cluster: dict[str, Any], gateway: GatewayProcess, open_door: str
) -> None:
    assert check("auth-enforced", gateway.url).status == "pass"
    assert check("metrics-router-up", gateway.url).status == "pass"
    unguarded = check("auth-enforced", open_door)
    assert unguarded.status == "fail"
    assert "GET /v1/models with no key answered 200" in unguarded.reason
    down = check("metrics-router-up", open_door)
    assert down.status == "fail" and down.reason == "clawdbot_router_up is 0"
    with pytest.raises(httpx.ConnectError):  # the runner turns it into a failed check
        check("metrics-router-up", f"http://127.0.0.1:{free_port()}")


@override_settings(**FAST_SMOKE)
def test_smoke_load_and_latency_fail_on_a_sick_node(
    simulator: Callable[..., SimProcess], gateway: GatewayProcess, transactional_db: None
) -> None:
    sim = simulator("--model", "qwen3:32b", "--error-rate", "0.5", "--fault-seed", "7")
    serving_node("sick", sim)
    key = apikey_create(name="smoke")
    verdict = check("smoke-load", gateway.url, smoke_key=key.secret, smoke_prefix=key.key.prefix)
    assert verdict.status == "fail", verdict.reason
    assert "qwen3-32b 5" in verdict.reason  # the failing status is named
    with override_settings(CLAWDBOT_READY_P95_LARGE_GPU_S=0.0001):
        slow = check("latency-p95", smoke_sent=True, smoke_prefix=key.key.prefix)
    assert slow.status == "fail" and slow.reason.startswith("sick: p95")


def clawdbot(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clawdbot_site.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def command_env(**extra: str) -> dict[str, str]:
    from django.conf import settings

    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CLAWDBOT_SECRET_KEY": settings.SECRET_KEY,
        "CLAWDBOT_LOG_LEVEL": "WARNING",
        "CLAWDBOT_READY_SMOKE_REQUESTS": "20",
        **extra,
    }


def test_the_command_reports_a_database_that_is_down(transactional_db: None) -> None:
    closed = free_port()
    env = command_env(DATABASE_URL=f"postgres://postgres@127.0.0.1:{closed}/nothing")
    result = clawdbot("readiness", "--json", "--url", f"http://127.0.0.1:{free_port()}", env=env)
    assert result.returncode == 1, result.stderr[-800:]
    report = orjson.loads(result.stdout)
    checks = {c["check_key"]: c for c in report["results"]}
    assert checks["database"]["status"] == "fail"
    assert (
        str(closed) in checks["database"]["reason"]
        or "connect" in checks["database"]["reason"].lower()
    )
    assert checks["redis"]["status"] == "pass"
    # Checks that need the nodes fail, saying why, rather than skip as if none were set up.
    for key in ("gpu-memory", "self-heal-commands", "nodes-configured"):
        assert checks[key]["status"] == "fail", checks[key]
        assert checks[key]["reason"].startswith("cannot read the nodes"), checks[key]
    assert report["id"] is None  # nowhere to store it, and it says so
    assert "Traceback" not in result.stdout + result.stderr


def test_the_command_reports_redis_that_is_down(transactional_db: None) -> None:
    env = command_env(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    result = clawdbot("readiness", "--url", f"http://127.0.0.1:{free_port()}", env=env)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    redis_line = next(i for i, line in enumerate(lines) if "Redis reachable" in line)
    assert lines[redis_line].startswith("FAIL")
    assert lines[redis_line - 2].startswith("PASS")  # the database, just above
    assert "NOT READY" in result.stdout and "Traceback" not in result.stdout + result.stderr


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_serve_production_refuses_to_start_when_not_ready(transactional_db: None) -> None:
    port = free_port()
    result = clawdbot("serve", "--production", "--port", str(port), env=command_env())
    assert result.returncode == 78  # EX_CONFIG: the systemd unit does not retry it
    assert "NOT READY" in result.stdout
    assert "no enabled node" in result.stdout
    assert "refuses to start" in result.stderr
    assert not _listening(port)
    run = ReadinessRun.objects.get()
    assert run.trigger == "serve --production" and run.state == "failed"
    assert run.results.filter(status=ReadinessResult.Status.FAIL).exists()


@contextlib.contextmanager
def serving(port: int, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`clawdbot serve --production` started, with what it printed up to its banner (or its
    end); stopped on leaving."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "clawdbot_site.cli", "serve", "--production", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        output = []
        for line in proc.stdout:  # bounded: the process ends or serves
            output.append(line)
            if "serving on" in line:
                break
        yield proc, "".join(output)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_serve_production_starts_once_ready(cluster: dict[str, Any]) -> None:
    port = free_port()
    with serving(port, command_env()) as (proc, text):
        assert "READY:" in text, text[-2000:]
        assert proc.poll() is None
        deadline = time.monotonic() + 15
        while not _listening(port) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)  # bounded: daphne binds just after the banner
        assert _listening(port)
    assert ReadinessRun.objects.get().state == "passed"


def test_serve_production_can_skip_the_checklist_during_an_incident(
    transactional_db: None,
) -> None:
    with serving(free_port(), command_env(CLAWDBOT_SKIP_READINESS="1")) as (_, text):
        assert "WARNING: production mode started without the readiness checklist" in text
        assert "readiness checklist first" not in text
    assert not ReadinessRun.objects.exists()
