"""Celery processes for tests: a real worker (and optionally beat) on the test Redis and the
test database, like tests/gateways.py does for daphne."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings

from clawdbot_site import processes
from clawdbot_site.celery import app
from tests.gateways import database_url

ROOT = Path(__file__).resolve().parent.parent


def test_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CLAWDBOT_SECRET_KEY": settings.SECRET_KEY,
        "CLAWDBOT_LOG_LEVEL": "INFO",
        **(extra or {}),
    }


class CeleryProcess:
    """`celery worker` (queues `celery` by default) or `celery beat`, as a subprocess."""

    def __init__(
        self,
        kind: str = "worker",
        *,
        queues: str = "celery",
        env: dict[str, str] | None = None,
        name: str = "",
    ) -> None:
        self.kind = kind
        self.log = tempfile.NamedTemporaryFile(prefix=f"celery-{kind}-", suffix=".log")
        self.hostname = name or f"test-{kind}-{os.getpid()}-{time.monotonic_ns()}@localhost"
        args = [sys.executable, "-m", "celery", "-A", "clawdbot_site", kind, "--loglevel", "INFO"]
        if kind == "worker":
            args += ["--pool", "threads", "--concurrency", "4", "-Q", queues, "-n", self.hostname]
            args += ["--without-gossip", "--without-mingle"]
        else:
            args += ["--schedule", str(Path(tempfile.mkdtemp()) / "beat-schedule")]
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=test_env(env), stdout=self.log, stderr=subprocess.STDOUT
        )
        if kind == "worker":
            self._wait_ready()

    def _wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery {self.kind} exited:\n{self.output()[-3000:]}")
            replies = app.control.ping(destination=[self.hostname], timeout=0.5)
            if replies:
                return
        self.stop()
        raise RuntimeError(f"celery worker not ready in {timeout_s} s:\n{self.output()[-3000:]}")

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        processes.stop(self.proc, grace_s=15)
        self.log.close()
