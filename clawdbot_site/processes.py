"""Stopping child processes (embedded Redis, test servers and workers) the same way
everywhere: ask, wait, then kill, and always reap."""

from __future__ import annotations

import subprocess
from typing import Any


def stop(proc: subprocess.Popen[Any], grace_s: float = 10.0) -> None:
    """SIGTERM, up to `grace_s` for a clean exit, then SIGKILL; the process is reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
