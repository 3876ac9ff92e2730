"""Node agent processes for tests: `clawdbot agent --node NAME` (a Celery worker on the
node's queue) against a fake NVML file, as a GPU host would run it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from clawdbot_site.celery import app
from nodes import fake_nvml, telemetry_store

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 30.0
TASK_TIMEOUT_S = 20.0


def fake_gpus(util: int, temperature: int) -> dict[str, Any]:
    return {
        "driver_version": "550.54.15",
        "gpus": [
            {
                "name": "NVIDIA H200",
                "uuid": "GPU-0",
                "util": util,
                "mem_used_mib": 2048,
                "mem_total_mib": 143771,
                "temperature": temperature,
                "power_w": 250,
                "power_limit_w": 700,
                "processes": [],
            },
            {"name": "NVIDIA H200", "uuid": "GPU-1", "util": util, "temperature": 40},
        ],
    }


class AgentProcess:
    """`manage.py agent --node NAME` in its own process group (the worker forks children)."""

    def __init__(
        self,
        node: str,
        workdir: Path,
        fake_file: Path | None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.node = node
        self.hostname = f"agent-{node}@{socket.gethostname()}"
        self.log = tempfile.TemporaryFile()
        env = {
            **os.environ,
            "REDIS_URL": settings.REDIS_URL,
            # An empty, unmigrated database: the agent must run on Redis alone.
            "DATABASE_URL": f"sqlite:///{workdir / 'agent.sqlite3'}",
            "CLAWDBOT_LOG_LEVEL": "WARNING",
        }
        env.pop(fake_nvml.FAKE_ENV, None)
        if fake_file is not None:
            env[fake_nvml.FAKE_ENV] = str(fake_file)
        env.update(extra_env or {})
        _purge(f"node.{node}")  # tasks left by an earlier, interrupted run
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "agent", "--node", node, "--loglevel", "WARNING"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,  # a file, not a pipe: a full pipe would block the worker
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited: {self.output()[-3000:]}")
            if app.control.ping(destination=[self.hostname], timeout=0.5):
                return
        raise RuntimeError(f"agent did not answer a ping in {START_TIMEOUT_S} s: {self.output()}")

    def send(self, task: str, *args: Any, **kwargs: Any) -> Any:
        result = app.send_task(
            f"nodes.agent.{task}", args=args, kwargs=kwargs, queue=f"node.{self.node}"
        )
        return result.get(timeout=TASK_TIMEOUT_S)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def kill(self) -> None:
        """Die the way a crashed host does: no clean-up at all."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        # Reap the prefork children too, should one outlive the main process.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _purge(queue: str) -> None:
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)


def _forget(*nodes: str) -> None:
    client = telemetry_store.sync_client()
    client.delete(*(telemetry_store.telemetry_key(n) for n in nodes))
    client.delete(*(telemetry_store.agent_key(n) for n in nodes))
