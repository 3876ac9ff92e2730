"""`clawdbot serve --workers N`: N daphne processes serving one port, for a machine with no
proxy in front (`make run`). The deploy kit does the same job with nginx over one systemd
unit per process (deploy/README.md); this is the one-command equivalent.

The supervisor binds one listening socket per process, all on the same port with
SO_REUSEPORT, and keeps them open for its whole life; each child adopts its own (daphne's
`--fd`), and a replacement child adopts the socket of the child it replaces. Why this, on
Linux, rather than the alternatives:

- One socket shared by every child (the pre-fork way) leaves the split to whichever child
  wakes first, and keep-alive connections stay where they land. Measured here, 20 times 16
  connections opened at once (as a load generator or a client's pool does) on two idle
  processes: a shared socket split them 16/0 three times (mean difference 7.4), SO_REUSEPORT,
  which spreads connections by a hash of their addresses, 12/4 at worst (mean 3.0).
- A SO_REUSEPORT socket has an accept queue of its own, and when the last descriptor of a
  socket closes, the connections queued on it are reset (unless net.ipv4.tcp_migrate_req,
  off by default, moves them). Children do not own the sockets here: a child that dies
  leaves its socket, and what is queued on it, to its replacement. The cost: connections
  hashed to that socket wait for the replacement (a few seconds) instead of a sibling.
- The port stays bound as long as the supervisor runs, whatever the children do.
- A port already in use is one error in the supervisor before any child starts. A plain
  bind is tried first, because binding with SO_REUSEPORT would silently join another
  server's group on that port (a second `make run`, say) and share its traffic.

A child that exits is started again. One that exits within STARTUP_S of its start did not
start: after MAX_FAILED_STARTS of those in a row (a broken configuration fails every start)
the supervisor stops the others and exits 1. SIGTERM or SIGINT stops every child (SIGTERM,
then SIGKILL after STOP_GRACE_S) and exits 0. Children run in their own process group, so a
terminal's Ctrl-C reaches them only through the supervisor, and are sent SIGTERM by the
kernel if the supervisor itself dies (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

STARTUP_S = 10.0
MAX_FAILED_STARTS = 3
# Below the deploy kit's TimeoutStopSec (30 s): the children's own shutdown has time to end.
STOP_GRACE_S = 20.0
_PR_SET_PDEATHSIG = 1


def available_cpus() -> int:
    """CPUs this process may run on (an affinity mask or a container's cpuset counts)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def worker_count(text: str) -> int:
    """`--workers` and CLAWDBOT_WEB_WORKERS: a count, or `auto` (or 0) for one per CPU."""
    value = text.strip().lower()
    if value == "auto":
        return available_cpus()
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"must be a number of processes or 'auto', got {text!r}") from None
    if count < 0:
        raise ValueError(f"must be at least 0 (0 or 'auto': one per CPU), got {count}")
    return count or available_cpus()


def restart_delay(failed_starts: int) -> float | None:
    """Seconds to wait before starting a slot's child again, after `failed_starts` children
    in a row exited within STARTUP_S; None: give up."""
    if failed_starts >= MAX_FAILED_STARTS:
        return None
    if failed_starts == 0:
        return 0.0
    return min(0.5 * 2 ** (failed_starts - 1), 5.0)


def listen(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on one port (SO_REUSEPORT), one per child. IPv4 only:
    daphne's `--fd` adopts AF_INET sockets."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve --host {host!r}: {exc}") from None
    if family != socket.AF_INET:
        raise OSError(
            f"--workers above 1 needs an IPv4 --host (daphne adopts IPv4 sockets only), got "
            f"{host!r}; run one process per port behind a proxy instead (deploy/README.md)"
        )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Fails on any listener, a SO_REUSEPORT group included (see the module's docstring).
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(socket.SOMAXCONN)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to SIGTERM the child when the supervisor dies, so a
    SIGKILLed supervisor leaves no daphne serving the port on its own. Linux only."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os._exit(1)

    return preexec


@dataclass
class Slot:
    index: int
    sock: socket.socket
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failed_starts: int = 0
    due: float = 0.0  # when to start a child, while proc is None


class Supervisor:
    """Runs `command(fd)` in one child per listening socket, each child on its own."""

    def __init__(
        self,
        command: Callable[[int], Sequence[str]],
        socks: Sequence[socket.socket],
        env: dict[str, str],
    ) -> None:
        self.command = command
        self.slots = [Slot(i + 1, sock) for i, sock in enumerate(socks)]
        self.env = env
        self.stop_signal = 0
        self.preexec = _die_with_parent()

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        # A child's exit and a stop request both wake the loop through this pipe: a signal
        # arriving between the check and the wait still ends the wait.
        old_fd = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        handled = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT)
        old = {signum: signal.getsignal(signum) for signum in handled}
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        code = 0
        try:
            code = self._supervise(wake_r)
        finally:
            self._stop_all()
            signal.set_wakeup_fd(old_fd)
            for signum, handler in old.items():
                signal.signal(signum, handler)
            os.close(wake_r)
            os.close(wake_w)
        return code

    def _request_stop(self, signum: int, frame: Any) -> None:
        self.stop_signal = signum

    def _supervise(self, wake: int) -> int:
        while not self.stop_signal:
            now = time.monotonic()
            for slot in self.slots:
                if slot.proc is None and slot.due <= now:
                    self._start(slot)
            waiting = [slot.due - now for slot in self.slots if slot.proc is None]
            timeout = max(0.0, min(waiting)) if waiting else None
            try:
                select.select([wake], [], [], timeout)
            except InterruptedError:
                pass
            try:
                while os.read(wake, 512):
                    pass
            except BlockingIOError:
                pass
            if self.stop_signal:
                break
            for slot in self.slots:
                if not self._reap(slot):
                    return 1
        log.info("stopping %d gateway processes (%s)", len(self.slots), self._signal_name())
        return 0

    def _signal_name(self) -> str:
        return signal.Signals(self.stop_signal).name if self.stop_signal else "no signal"

    def _start(self, slot: Slot) -> None:
        fd = slot.sock.fileno()
        slot.proc = subprocess.Popen(
            list(self.command(fd)),
            env=self.env,
            pass_fds=(fd,),
            process_group=0,
            preexec_fn=self.preexec,
        )
        slot.started = time.monotonic()
        log.info("gateway process %d started (pid %d)", slot.index, slot.proc.pid)

    def _reap(self, slot: Slot) -> bool:
        """Notice a child that exited and plan its successor; False: stop trying."""
        if slot.proc is None or slot.proc.poll() is None:
            return True
        now = time.monotonic()
        ran_s = now - slot.started
        pid, code = slot.proc.pid, slot.proc.returncode
        slot.proc = None
        slot.failed_starts = slot.failed_starts + 1 if ran_s < STARTUP_S else 0
        delay = restart_delay(slot.failed_starts)
        if delay is None:
            log.error(
                "gateway process %d (pid %d) exited with %s after %.1f s: %d starts in a row "
                "failed, giving up",
                slot.index,
                pid,
                code,
                ran_s,
                slot.failed_starts,
            )
            return False
        log.warning(
            "gateway process %d (pid %d) exited with %s after %.1f s; starting another in %.1f s",
            slot.index,
            pid,
            code,
            ran_s,
            delay,
        )
        slot.due = now + delay
        return True

    def _stop_all(self) -> None:
        running = [slot.proc for slot in self.slots if slot.proc is not None]
        for proc in running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in running:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("gateway process pid %d did not stop: killing it", proc.pid)
                proc.kill()
                proc.wait()
        for slot in self.slots:
            slot.proc = None
