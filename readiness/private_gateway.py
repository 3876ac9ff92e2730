"""A gateway process of its own for the request-path checks: started on a free loopback port
with this process's settings, stopped when the run ends. `serve --production` runs the
checklist before it listens on its real port, so the checks cannot go to the real one."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import httpx

from readiness.checks import NoGateway

START_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_gateway() -> Iterator[Callable[[], str]]:
    """Yields a starter: the first call starts the gateway and returns its URL."""
    started: list[subprocess.Popen[bytes]] = []
    log = tempfile.TemporaryFile()

    def start() -> str:
        port = _free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "clawdbot_site.asgi:application",
            ],
            env={**os.environ, "CLAWDBOT_LOG_LEVEL": "WARNING"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code < 500:
                    return url
            except httpx.HTTPError:
                time.sleep(0.1)  # bounded wait for the port to open
        log.seek(0)
        tail = log.read()[-600:].decode(errors="replace").strip()
        raise NoGateway(
            f"a private gateway did not start within {START_TIMEOUT_S:g} s"
            + (f": {tail}" if tail else "")
        )

    try:
        yield start
    finally:
        for proc in started:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
