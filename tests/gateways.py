"""Gateway processes for tests: real daphne serving the real ASGI app, pointed at the test
database (so tests must commit: use `transactional_db`) and the test Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis
from django.conf import settings

from clawdbot_site import processes, redis_keys

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_url() -> str:
    db = settings.DATABASES["default"]
    if str(db["ENGINE"]).endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = f"{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}"
    return f"postgres://{user}{password}@{host}/{db['NAME']}"


def gateway_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a gateway process under test: the test database and Redis, short
    timeouts."""
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CLAWDBOT_SECRET_KEY": settings.SECRET_KEY,
        "CLAWDBOT_QUEUE_TIMEOUT_S": "3",
        "CLAWDBOT_KEEPALIVE_S": "0.3",
        "CLAWDBOT_EJECT_COOLDOWN_S": "30",
        "CLAWDBOT_CONNECT_TIMEOUT_S": "2",
        "CLAWDBOT_READ_TIMEOUT_S": "20",
        "CLAWDBOT_LOG_LEVEL": "WARNING",
        # Tests that inject faults would move the shared tier and change what later tests
        # get; the degradation tests start gateways of their own with tiers on.
        "CLAWDBOT_TIER_ENABLED": "false",
        **(env or {}),
    }


class GatewayProcess:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log = tempfile.TemporaryFile()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = gateway_env(env)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "--access-log",
                os.devnull,
                "clawdbot_site.asgi:application",
            ],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,  # a file, not a pipe: a full pipe would block the server
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.output()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)  # bounded readiness poll
        self.stop()
        raise RuntimeError("gateway did not start within 30 s")

    def wait_for_config(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Block until the gateway routes on the config committed so far."""
        target = int(redis.Redis.from_url(settings.REDIS_URL).get(redis_keys.ROUTING_VERSION) or 0)
        deadline = time.monotonic() + timeout_s
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = httpx.get(self.url + "/readyz", timeout=5).json()
            if body.get("snapshot_version", -1) >= target:
                return body
            time.sleep(0.05)  # bounded poll on the gateway's own report
        raise AssertionError(f"gateway still on {body} after {timeout_s} s (want {target})")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        processes.stop(self.proc)
