"""`make bench`: the data plane against a zero-latency simulator, beside the simulator
measured directly in the same run. Everything on: auth, rate limits, metrics, request logs.

Reports non-streaming throughput at 16 connections (wrk when installed, else an aiohttp
client), added p50/p99 latency at 1 connection, streaming chunks/s with 8 clients (Ollama
upstream translated to SSE, 20 chunks per answer), added time to first token, and the
gateway's peak RSS, then its RSS after a burst of hostile-sized bodies (8 at a time, 5-11 MB,
three passes). Figures are ratios against the simulator, measured in the same run.

Last, the non-streaming throughput again through `clawdbot serve --workers N` on one port,
with 1 and then 2 gateway processes, nothing pinned (the processes share every CPU with the
simulator, Redis and the load generator), and the ratio of the two."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.cluster import free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
DURATION_S = float(os.environ.get("BENCH_SECONDS", "10"))
CHAT = {
    "model": "bench",
    "messages": [{"role": "user", "content": "Hello there"}],
    "max_tokens": 20,
}
NATIVE = {
    "model": "qwen3:32b",
    "messages": [{"role": "user", "content": "Hello there"}],
    "stream": False,
    "options": {"num_ctx": 8192, "num_predict": 20},
}


def peak_rss_mb(pid: int, field: str = "VmHWM") -> float:
    """The process's peak resident memory (VmHWM), or its current one (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def large_bodies(url: str, headers: dict[str, str]) -> list[int]:
    """Hostile-sized requests: 8 at a time, 5 to 11 MB each (the default body limit is
    10 MiB, so some are refused at 413), three passes. Returns the statuses seen."""
    statuses: list[int] = []
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(size_mb: int) -> None:
            content = "word " * (size_mb * 1024 * 1024 // 5)
            body = {**CHAT, "messages": [{"role": "user", "content": content}]}
            async with session.post(url, json=body, headers=headers) as response:
                await response.read()
                statuses.append(response.status)

        for _ in range(3):
            await asyncio.gather(*(one(size) for size in range(5, 13)))
    return statuses


def wrk_rps(url: str, body: dict[str, Any], headers: dict[str, str], connections: int) -> float:
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(body))}"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script.write("\n".join(lines) + "\n")
    script.close()
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "2",
            "-c",
            str(connections),
            "-d",
            f"{DURATION_S:g}s",
            "-s",
            script.name,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)
    non_2xx = [ln for ln in out.splitlines() if "Non-2xx" in ln]
    if non_2xx:
        raise RuntimeError(f"wrk saw errors against {url}: {non_2xx}")
    return float(next(ln for ln in out.splitlines() if ln.startswith("Requests/sec")).split()[1])


async def aio_rps(
    url: str, body: dict[str, Any], headers: dict[str, str], connections: int
) -> float:
    done = 0
    deadline = time.perf_counter() + DURATION_S
    async with aiohttp.ClientSession(headers=headers) as session:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with session.post(url, json=body) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url} answered {response.status}")
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return done / (time.perf_counter() - started)


async def aio_requests(
    url: str, body: dict[str, Any], headers: dict[str, str], connections: int, total: int
) -> None:
    """`total` requests over `connections` connections, each answer checked."""
    left = total
    async with aiohttp.ClientSession(headers=headers) as session:

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.post(url, json=body) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url} answered {response.status}")

        await asyncio.gather(*(worker() for _ in range(connections)))


async def latencies(url: str, body: dict[str, Any], headers: dict[str, str], n: int) -> list[float]:
    out = []
    async with aiohttp.ClientSession(headers=headers) as session:
        for i in range(n + 50):
            started = time.perf_counter()
            async with session.post(url, json=body) as response:
                await response.read()
            if i >= 50:  # warm-up
                out.append((time.perf_counter() - started) * 1000)
    return out


async def stream_load(
    url: str, body: dict[str, Any], headers: dict[str, str], clients: int, marker: bytes
) -> tuple[float, list[float]]:
    """(chunks/s, time-to-first-chunk samples in ms) with `clients` concurrent streams."""
    chunks = 0
    ttfts: list[float] = []
    deadline = time.perf_counter() + DURATION_S
    async with aiohttp.ClientSession(headers=headers) as session:

        async def worker() -> None:
            nonlocal chunks
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                first = True
                async with session.post(url, json=body) as response:
                    buffer = b""
                    async for data in response.content.iter_any():
                        buffer += data
                        count = buffer.count(marker)
                        if count:
                            if first:
                                ttfts.append((time.perf_counter() - started) * 1000)
                                first = False
                            chunks += count
                            buffer = buffer[buffer.rfind(marker) + len(marker) :]

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return chunks / (time.perf_counter() - started), ttfts


def pin(pid: int, cpus: set[int]) -> None:
    """Move every thread of a process (sched_setaffinity on a pid moves only its main one)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), cpus)


def hop_rtt_us(here: int, there: int, n: int = 2000) -> float:
    """p50 round trip of one byte over a socketpair to a process on CPU `there`, from this
    process moved to CPU `here`, with idle gaps between pings like a 1-connection client's."""
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the echo
        os.sched_setaffinity(0, {there})
        a.close()
        while data := b.recv(1):
            b.send(data)
        os._exit(0)
    b.close()
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {here})
    samples = []
    try:
        for _ in range(n):
            started = time.perf_counter()
            a.send(b"x")
            a.recv(1)
            samples.append((time.perf_counter() - started) * 1e6)
            time.sleep(0.0002)
    finally:
        a.close()
        os.waitpid(pid, 0)
        os.sched_setaffinity(0, before)
    return statistics.median(samples)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="clawdbot-bench-"))
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{work / 'bench.sqlite3'}",
        "CLAWDBOT_VAR_DIR": str(work),
        "CLAWDBOT_LOG_LEVEL": "WARNING",
    }
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, cpus: set[int] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        if cpus:
            os.sched_setaffinity(proc.pid, cpus)
        procs.append(proc)
        return proc

    # One core for the gateway, the rest for the simulator, Redis and the load generator:
    # without it they fight over both cores and the figures swing by 2x between runs.
    all_cpus = sorted(os.sched_getaffinity(0))
    gateway_cpus = {all_cpus[0]} if len(all_cpus) > 1 else None
    other_cpus = set(all_cpus[1:]) if len(all_cpus) > 1 else None
    if other_cpus:
        os.sched_setaffinity(0, other_cpus)  # this process and what it starts from now on

    from clawdbot_site import embedded_redis

    redis_proc = None
    if not os.environ.get("REDIS_URL"):
        redis_proc = embedded_redis.start(work / "redis.sock")
        env["REDIS_URL"] = f"unix://{work / 'redis.sock'}"
    try:
        sim_port, gw_port = free_port(), free_port()
        start(PY, "-m", "simulator", "--port", str(sim_port), "--zero-latency",
              "--model", "qwen3:32b", "--answer-tokens", "20", "--parallel", "64",
              "--max-queue", "1024")  # fmt: skip
        sim = f"http://127.0.0.1:{sim_port}"
        wait_http(sim + "/", timeout_s=30)
        manage = [PY, "manage.py"]
        subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        subprocess.run(
            [*manage, "onboard", "--name", "sim", "--url", sim, "--api", "ollama",
             "--gpu-type", "A100", "--max-concurrent", "64", "--queue-size", "256",
             "--context-window", "8192"],
            cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        subprocess.run(
            [PY, "-c", "import django,os;os.environ.setdefault('DJANGO_SETTINGS_MODULE',"
             "'clawdbot_site.settings');django.setup();from nodes.models import ModelProfile;"
             "ModelProfile.objects.filter(model_id='qwen3:32b').update(model_id='bench')"],
            cwd=ROOT, env=env, check=True,
        )  # fmt: skip
        key = (
            subprocess.run(
                [*manage, "apikey", "create", "--name", "bench", "--rpm", "10000000",
                 "--tpm", "1000000000"],
                cwd=ROOT, env=env, check=True, capture_output=True, text=True,
            ).stdout.strip().splitlines()[-1]
        )  # fmt: skip
        gateway = start(PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(gw_port),
                        "-v", "0", "clawdbot_site.asgi:application",
                        cpus=gateway_cpus)  # fmt: skip
        gw = f"http://127.0.0.1:{gw_port}"
        wait_http(gw + "/healthz", timeout_s=30)
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        plain = {"Content-Type": "application/json"}
        gw_chat, sim_chat = gw + "/v1/chat/completions", sim + "/api/chat"
        asyncio.run(latencies(gw_chat, CHAT, auth, 50))  # warm the gateway

        use_wrk = shutil.which("wrk") is not None
        tool = "wrk -t2 -c16" if use_wrk else "aiohttp client, 16 connections"

        def rps(url: str, body: dict[str, Any], headers: dict[str, str]) -> float:
            if use_wrk:
                return wrk_rps(url, body, headers, 16)
            return asyncio.run(aio_rps(url, body, headers, 16))

        direct_rps = rps(sim_chat, NATIVE, plain)
        gateway_rps = rps(gw_chat, CHAT, auth)
        # Latency at one connection is measured with everything on one CPU: the direct path
        # (client and simulator) crosses no CPU, and the gateway's path would otherwise cross
        # six times per request, each a wake-up of an idle virtual CPU (see the hop row).
        split_rows: list[tuple[str, str, str, str, str]] = []
        if gateway_cpus and other_cpus:
            split_direct = asyncio.run(latencies(sim_chat, NATIVE, plain, 500))
            split_gateway = asyncio.run(latencies(gw_chat, CHAT, auth, 500))
            pin(gateway.pid, other_cpus)
        direct_lat = asyncio.run(latencies(sim_chat, NATIVE, plain, 500))
        gateway_lat = asyncio.run(latencies(gw_chat, CHAT, auth, 500))
        if gateway_cpus and other_cpus:
            pin(gateway.pid, gateway_cpus)
            here, there = min(other_cpus), min(gateway_cpus)
            same_hop, cross_hop = hop_rtt_us(here, here), hop_rtt_us(here, there)
            split_added = pct(split_gateway, 50) - pct(split_direct, 50)
            split_rows = [
                ("  p50, gateway on own CPU", f"{pct(split_direct, 50):.2f}",
                 f"{pct(split_gateway, 50):.2f}", f"+{split_added:.2f} ms", "(info)"),
                ("  CPU hop round trip, us", f"{same_hop:.0f} same", f"{cross_hop:.0f} across",
                 "", "(info)"),
            ]  # fmt: skip
        stream_body = {**CHAT, "stream": True}
        native_stream = {**NATIVE, "stream": True}
        direct_cps, direct_ttft = asyncio.run(stream_load(sim_chat, native_stream, plain, 8, b"\n"))
        gateway_cps, gateway_ttft = asyncio.run(stream_load(gw_chat, stream_body, auth, 8, b"\n\n"))
        rss = peak_rss_mb(gateway.pid)
        big_statuses = asyncio.run(large_bodies(gw_chat, auth))
        time.sleep(1.0)  # the last requests' closing work runs after their answers went out
        big_peak, big_after = peak_rss_mb(gateway.pid), peak_rss_mb(gateway.pid, "VmRSS")
        gateway.terminate()
        gateway.wait()

        def served_rps(workers: int) -> float:
            """Throughput through `clawdbot serve --workers N` on one port, nothing pinned."""
            port = free_port()
            serve = start(PY, "-m", "clawdbot_site.cli", "serve", "-v", "0", "--port",
                          str(port), "--workers", str(workers))  # fmt: skip
            url = f"http://127.0.0.1:{port}"
            wait_http(url + "/healthz", timeout_s=30)
            # Warm every process: connections hashed to one still starting wait for it.
            asyncio.run(aio_requests(url + "/v1/chat/completions", CHAT, auth, 16, 400))
            try:
                return rps(url + "/v1/chat/completions", CHAT, auth)
            finally:
                serve.terminate()
                serve.wait(timeout=30)

        if other_cpus:  # unpin this process (what it starts next too) and the others
            os.sched_setaffinity(0, set(all_cpus))
            for proc in procs:
                if proc.poll() is None:
                    pin(proc.pid, set(all_cpus))
            if redis_proc is not None:
                pin(redis_proc.pid, set(all_cpus))
        one_rps = served_rps(1)
        two_rps = served_rps(2)
        # Every answer is 20 content events + role + finish + [DONE]: count content chunks alike.
        gateway_content_cps = gateway_cps * 20 / 23
        direct_content_cps = direct_cps * 20 / 21  # 20 tokens + the done line
        p50_added = pct(gateway_lat, 50) - pct(direct_lat, 50)
        p99_added = pct(gateway_lat, 99) - pct(direct_lat, 99)
        ttft_added = statistics.median(gateway_ttft) - statistics.median(direct_ttft)
        rows = [
            ("non-stream req/s, 16 conns", f"{direct_rps:,.0f}", f"{gateway_rps:,.0f}",
             f"{gateway_rps / direct_rps:.2f}", ">= 900"),
            ("p50 latency ms, 1 conn", f"{pct(direct_lat, 50):.2f}", f"{pct(gateway_lat, 50):.2f}",
             f"+{p50_added:.2f} ms", "<= +1 ms"),
            ("p99 latency ms, 1 conn", f"{pct(direct_lat, 99):.2f}", f"{pct(gateway_lat, 99):.2f}",
             f"+{p99_added:.2f} ms", ""),
            *split_rows,
            ("stream chunks/s, 8 clients", f"{direct_content_cps:,.0f}",
             f"{gateway_content_cps:,.0f}", f"{gateway_content_cps / direct_content_cps:.2f}",
             ">= 16,000"),
            ("stream TTFT ms (median)", f"{statistics.median(direct_ttft):.2f}",
             f"{statistics.median(gateway_ttft):.2f}", f"+{ttft_added:.2f} ms", ""),
            ("gateway peak RSS MB", "", f"{rss:.0f}", "", "<= 130"),
            ("  after 24 bodies of 5-11 MB", "", f"{big_after:.0f}", "", "<= 130"),
            ("  peak during them", "", f"{big_peak:.0f}", "", "(info)"),
            ("req/s via serve, 1 process", "", f"{one_rps:,.0f}", "", "(info)"),
            ("  2 processes, one port", "", f"{two_rps:,.0f}", f"{two_rps / one_rps:.2f}x",
             "(info)"),
        ]  # fmt: skip
        if set(big_statuses) - {400, 413}:
            print(f"large bodies: unexpected statuses {sorted(set(big_statuses))}")
        pinning = (
            f"gateway pinned to CPU {sorted(gateway_cpus)}, the rest to {sorted(other_cpus or [])}"
            if gateway_cpus
            else "one CPU, nothing pinned"
        )
        print(
            f"\nClawdbot data-plane benchmark ({DURATION_S:g} s per run; load: {tool}; {pinning})"
        )
        print(f"{'measure':<28} {'simulator':>11} {'gateway':>11} {'ratio/added':>12}  target")
        for name, direct, via, ratio, target in rows:
            print(f"{name:<28} {direct:>11} {via:>11} {ratio:>12}  {target}")
        if gateway_cpus:
            print(
                "1-connection latency: everything on one CPU (no CPU crossings on either path);"
                " the info row repeats it with the gateway on its own CPU."
            )
        print(
            f"1 vs 2 processes: clawdbot serve -v 0 --workers N, {tool}, nothing pinned: the"
            f" gateways share {len(all_cpus)} CPU(s) with the simulator, Redis and the load."
        )
        return 0
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if redis_proc is not None:
            embedded_redis.stop(redis_proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
