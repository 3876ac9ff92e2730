"""Start real simulated GPU nodes (``python -m simulator``) from tests.

    with start_simulator("--api", "ollama", "--model", "qwen3:32b") as sim:
        httpx.get(sim.url + "/api/tags")
        sim.control(hang=True)          # POST /_sim/control on the control port
        sim.requests()                  # what the node received, oldest first

This module must not import Django: it also serves tests that run without it.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO

from clawdbot_site import processes
from simulator.control_client import SimulatorControl

REPO_ROOT = Path(__file__).resolve().parent.parent
URL_RE = re.compile(r"listening on (http://\S+)")
CONTROL_RE = re.compile(r"control=(http://\S+)")
START_TIMEOUT_S = 15.0


class SimProcess(SimulatorControl):
    """A running simulator process; stop it with ``stop()`` or use it as a context manager."""

    def __init__(
        self,
        proc: subprocess.Popen[str],
        url: str,
        control_url: str,
        reader: threading.Thread | None = None,
        banner: str = "",
    ) -> None:
        self.proc = proc
        self.banner = banner
        self.url = url
        super().__init__(control_url)
        self._reader = reader

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        processes.stop(self.proc, grace_s=5)
        if self._reader is not None:
            # The reader closes stdout once the dead process's pipe reaches EOF.
            self._reader.join(timeout=5)

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    """Hand over the banner, then keep draining so a chatty process never blocks on stdout."""
    first = True
    with stream:
        for line in stream:
            if first:
                lines.put(line)
                first = False
    if first:
        lines.put(None)


def start_simulator(
    *args: str, env: dict[str, str] | None = None, timeout: float = START_TIMEOUT_S
) -> SimProcess:
    """Spawn ``python -m simulator --port 0 *args`` and wait for its banner line.

    ``env`` entries are added to the current environment. stderr is inherited, so a crash
    shows up in the test output.
    """
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", "0", *args],
        cwd=REPO_ROOT,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
    reader.start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        line = None
    url = URL_RE.search(line or "")
    control = CONTROL_RE.search(line or "")
    if url is None or control is None:
        proc.kill()
        proc.wait(timeout=5)
        reader.join(timeout=5)
        raise RuntimeError(
            f"simulator {' '.join(args)} did not start within {timeout}s "
            f"(exit code {proc.returncode}, first line {line!r})"
        )
    return SimProcess(proc, url.group(1), control.group(1), reader, (line or "").strip())


@contextmanager
def simulators() -> Iterator[Callable[..., SimProcess]]:
    """A starter of simulator processes; every one it started is stopped on leaving."""
    started: list[SimProcess] = []

    def start(*args: str) -> SimProcess:
        sim = start_simulator(*args)
        started.append(sim)
        return sim

    try:
        yield start
    finally:
        for sim in started:
            sim.stop()
