"""`clawdbot serve --workers N` (clawdbot_site/supervisor.py): the restart policy and the
worker count as plain functions, then the real command: N daphne processes on one port, a
killed one replaced, SIGTERM stopping all of them, a supervisor's death taking its children
along, and children that cannot start making it exit 1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from clawdbot_site import processes, supervisor
from tests.gateways import free_port, gateway_env

ROOT = Path(__file__).resolve().parent.parent


# --- pure decisions ---


def test_worker_count_is_a_count_or_one_per_cpu() -> None:
    cpus = supervisor.available_cpus()
    assert supervisor.worker_count("3") == 3
    assert supervisor.worker_count("auto") == cpus
    assert supervisor.worker_count("0") == cpus
    assert supervisor.worker_count("00") == cpus
    assert supervisor.worker_count(" AUTO ") == cpus
    with pytest.raises(ValueError, match="number of processes or 'auto', got 'many'"):
        supervisor.worker_count("many")
    with pytest.raises(ValueError, match="at least 0"):
        supervisor.worker_count("-2")


def test_restart_at_once_after_a_run_then_back_off_then_give_up() -> None:
    assert supervisor.restart_delay(0) == 0.0  # it had been serving: replace it now
    assert supervisor.restart_delay(1) == 0.5
    assert supervisor.restart_delay(2) == 1.0
    assert supervisor.restart_delay(supervisor.MAX_FAILED_STARTS) is None


def test_listen_refuses_a_port_in_use_even_by_a_reuseport_group() -> None:
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        with pytest.raises(OSError):
            supervisor.listen("127.0.0.1", plain.getsockname()[1], 2)
    group = supervisor.listen("127.0.0.1", 0, 2)
    try:
        port = group[0].getsockname()[1]
        assert [s.getsockname()[1] for s in group] == [port, port]
        # A second supervisor on the same port would otherwise join the group silently.
        with pytest.raises(OSError):
            supervisor.listen("127.0.0.1", port, 2)
    finally:
        for sock in group:
            sock.close()


def test_listen_names_the_way_out_for_an_ipv6_host() -> None:
    with pytest.raises(OSError, match="needs an IPv4 --host"):
        supervisor.listen("::1", 0, 2)


# --- the real command ---


def tcp_sockets(port: int, state: str) -> set[int]:
    """Inodes of the IPv4 sockets on local port `port` in `state` (0A listening,
    01 established), from /proc/net/tcp."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == state:
            inodes.add(int(fields[9]))
    return inodes


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return sorted(int(child) for child in text.split())


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def poll(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)  # bounded poll of an observable condition
    raise AssertionError(f"not within {timeout_s} s: {what}")


def healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


class Serve:
    """`clawdbot serve --workers N` as a process (the checkout's code, not an installed one)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log: IO[bytes] = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clawdbot_site.cli", "serve", "--port", str(self.port), *args],
            cwd=ROOT,
            env=env or gateway_env({"CLAWDBOT_LOG_LEVEL": "INFO"}),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def serving_children(self) -> dict[int, set[int]]:
        """Each child and the listening sockets on the port it holds."""
        listening = tcp_sockets(self.port, "0A")
        return {pid: socket_inodes(pid) & listening for pid in children(self.proc.pid)}


@pytest.fixture
def serve() -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Serve:
        process = Serve(*args, env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        kids = children(process.proc.pid) if alive(process.proc.pid) else []
        processes.stop(process.proc, grace_s=30)
        for pid in kids:
            if alive(pid):  # only if the test failed before its supervisor stopped them
                os.kill(pid, signal.SIGKILL)


def open_connections(port: int, count: int) -> list[socket.socket]:
    """`count` keep-alive connections, each having had one answer (so a child accepted it)."""
    conns = []
    for _ in range(count):
        conn = socket.create_connection(("127.0.0.1", port), timeout=30)
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        conns.append(conn)
    for conn in conns:
        assert conn.recv(4096).startswith(b"HTTP/1.1 200")
    return conns


@pytest.mark.slow
def test_two_processes_serve_one_port_a_killed_one_is_replaced_and_sigterm_stops_all(
    serve: Callable[..., Serve],
) -> None:
    gateway = serve("--workers", "2")
    poll(lambda: healthy(gateway.url), 30, f"the gateway answering\n{gateway.output()}")
    poll(
        lambda: len(gateway.serving_children()) == 2 and all(gateway.serving_children().values()),
        30,
        "two children holding listening sockets on the port",
    )
    held = gateway.serving_children()
    first, second = sorted(held)
    assert held[first].isdisjoint(held[second]), "a socket of its own each (SO_REUSEPORT)"

    # Both accept connections: 32 opened at once land on both (hashed by address).
    conns = open_connections(gateway.port, 32)
    try:
        established = tcp_sockets(gateway.port, "01")
        per_child = {pid: len(socket_inodes(pid) & established) for pid in (first, second)}
        assert sum(per_child.values()) == 32
        assert min(per_child.values()) > 0, per_child
    finally:
        for conn in conns:
            conn.close()

    os.kill(first, signal.SIGKILL)
    # Connections hashed to the dead child's socket wait in its queue for the replacement
    # (the supervisor holds the socket): every one is answered, none reset.
    conns = open_connections(gateway.port, 16)
    for conn in conns:
        conn.close()
    poll(
        lambda: (
            first not in gateway.serving_children()
            and len(gateway.serving_children()) == 2
            and all(gateway.serving_children().values())
        ),
        30,
        "a replacement child holding the killed one's socket",
    )
    replaced = gateway.serving_children()
    replacement = next(pid for pid in replaced if pid != second)
    assert replaced[replacement] == held[first], "the replacement adopts the same socket"
    assert "exited with -9" in gateway.output()
    poll(lambda: healthy(gateway.url), 30, "the gateway answering")

    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(timeout=30) == 0, gateway.output()
    poll(lambda: not alive(second) and not alive(replacement), 10, "the children gone")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", gateway.port))  # the port is free again


@pytest.mark.slow
def test_a_killed_supervisor_takes_its_children_along(serve: Callable[..., Serve]) -> None:
    gateway = serve("--workers", "2")
    poll(
        lambda: len(gateway.serving_children()) == 2 and all(gateway.serving_children().values()),
        30,
        "two children holding listening sockets on the port",
    )
    kids = list(gateway.serving_children())
    gateway.proc.kill()
    gateway.proc.wait()
    poll(lambda: not any(alive(pid) for pid in kids), 20, "the orphaned children gone")


@pytest.mark.slow
def test_children_that_cannot_start_make_serve_exit_1(serve: Callable[..., Serve]) -> None:
    # --production without a secret key: the supervisor (not in production itself) starts,
    # every child refuses to. (--skip-readiness: the checklist would refuse first.)
    env = gateway_env({"CLAWDBOT_LOG_LEVEL": "INFO"})
    del env["CLAWDBOT_SECRET_KEY"]
    gateway = serve("--workers", "2", "--production", "--skip-readiness", env=env)
    assert gateway.proc.wait(timeout=120) == 1
    out = gateway.output()
    assert "CLAWDBOT_SECRET_KEY must be set" in out
    assert f"{supervisor.MAX_FAILED_STARTS} starts in a row failed, giving up" in out
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", gateway.port))
