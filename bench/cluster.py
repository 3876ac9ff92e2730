"""The processes the routing and multi-turn benchmarks run: simulated GPU nodes (vLLM's API,
one process each) and private gateways (one daphne process each, with its own SQLite
database and embedded Redis, so two gateways run side by side without seeing each other)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from simulator.control_client import SimulatorControl

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
MODEL = "qwen3-32b"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {timeout_s:g} s")


@dataclass
class Processes:
    """Everything a benchmark started, stopped (terminate, then kill) in reverse order."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    redis: list[subprocess.Popen[bytes]] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)

    def start(self, args: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(list(args), cwd=ROOT, env=dict(env), stdout=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        from clawdbot_site import embedded_redis

        for proc in reversed(self.procs):
            proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for redis in self.redis:
            embedded_redis.stop(redis)
        for path in self.dirs:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def processes() -> Iterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        procs.close()


@dataclass(frozen=True)
class SimNode:
    name: str
    gpu_type: str
    url: str
    control_url: str

    def stats(self) -> dict[str, Any]:
        return SimulatorControl(self.control_url).stats()


def start_nodes(
    procs: Processes, gpu_types: Sequence[str], *, prefix: str, sim_args: Sequence[str]
) -> list[SimNode]:
    """One simulated vLLM node per GPU type, named ``<prefix>-<gpu>``; returns once all
    answer /health."""
    nodes: list[SimNode] = []
    for gpu in gpu_types:
        port, control_port = free_port(), free_port()
        procs.start(
            [PY, "-m", "simulator", "--api", "openai", "--model", MODEL, "--port", str(port),
             "--control-port", str(control_port), "--gpu-type", gpu, *sim_args],
            os.environ,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        nodes.append(
            SimNode(f"{prefix}-{gpu.lower()}", gpu, url, f"http://127.0.0.1:{control_port}")
        )
    for node in nodes:
        wait_http(node.url + "/health")
    return nodes


@dataclass(frozen=True)
class Gateway:
    url: str
    key: str
    pid: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def start_gateway(
    procs: Processes,
    nodes: Sequence[SimNode],
    *,
    parallel: int,
    queue_size: int,
    env: Mapping[str, str] | None = None,
) -> Gateway:
    """A gateway of its own (SQLite, embedded Redis, one daphne process) with ``nodes``
    onboarded by GPU type, ``parallel`` slots and ``queue_size`` places each, and a key."""
    from clawdbot_site import embedded_redis

    work = Path(tempfile.mkdtemp(prefix="clawdbot-bench-"))
    procs.dirs.append(work)
    socket_path = work / "redis.sock"
    procs.redis.append(embedded_redis.start(socket_path))
    gateway_env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{work / 'bench.sqlite3'}",
        "CLAWDBOT_VAR_DIR": str(work),
        "CLAWDBOT_LOG_LEVEL": "WARNING",
        "REDIS_URL": f"unix://{socket_path}",
        **(env or {}),
    }
    # One Django process for the whole set-up: each command alone costs seconds of start-up.
    commands = [["migrate", "-v0"]]
    for node in nodes:
        commands.append(
            ["onboard", "--name", node.name, "--url", node.url, "--api", "openai",
             "--gpu-type", node.gpu_type, "--max-concurrent", str(parallel),
             "--queue-size", str(queue_size)]
        )  # fmt: skip
    commands.append(["apikey", "create", "--name", "bench", "--rpm", "10000000",
                     "--tpm", "1000000000"])  # fmt: skip
    script = (
        "import io, json, sys, django\n"
        "django.setup()\n"
        "from django.core.management import call_command\n"
        "out = io.StringIO()\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    call_command(*args, stdout=out)\n"
        "print(out.getvalue().strip().splitlines()[-1])\n"
    )
    key = subprocess.run(
        [PY, "-c", script, json.dumps(commands)],
        cwd=ROOT,
        env={**gateway_env, "DJANGO_SETTINGS_MODULE": "clawdbot_site.settings"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    port = free_port()
    proc = procs.start(
        [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0",
         "clawdbot_site.asgi:application"],
        gateway_env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz")
    return Gateway(url, key.strip().splitlines()[-1], proc.pid)


def git_commit() -> str:
    """The commit the benchmark ran at, marked when the working tree differs from it."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{head}{' + uncommitted changes' if dirty else ''}" if head else "unknown"


def machine_load() -> str:
    """The machine's load when a benchmark starts: simulated GPU time is paced by sleeps, so
    a machine whose CPUs are oversubscribed stretches every figure."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} CPUs"
