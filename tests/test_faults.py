"""Faults with real processes, each bounded in time (issue #12, item 4): a node killed under
load, a node that hangs, Redis restarted under load, the database unavailable, and a gateway
process killed while it holds slots. Gateways (daphne), simulated nodes, Redis, PostgreSQL and
a Celery worker run as processes; clients send requests concurrently while each fault
happens, and every wait is a bounded poll of something observable."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from django.conf import settings

from clawdbot_site import embedded_redis, redis_keys
from gateway import tasks
from gateway.admission import LEASE_TTL_MS
from gateway.models import RequestLog
from gateway.services import apikey_create
from nodes.models import ModelProfile
from nodes.routing_version import bump_now
from tests.gateway.world import add_node, build
from tests.gateways import GatewayProcess, free_port
from tests.simulators import SimProcess
from tests.workers import CeleryProcess

pytestmark = pytest.mark.slow  # real servers and processes

FAST = ("--api", "ollama", "--model", "qwen3:32b", "--zero-latency")
# About 60 ms an answer (5 tokens at 10 ms, no prefill): requests are in flight when a fault
# strikes, without the load costing much CPU.
PACED = (
    "--api", "ollama", "--model", "qwen3:32b", "--gpu-type", "A10", "--preloaded",
    "--prefill-ms", "0", "--decode-ms", "10", "--answer-tokens", "5",
)  # fmt: skip
ROOMY = {"max_concurrent": 32, "queue_size": 32}


def poll(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Wait for an observable condition; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(0.02)  # bounded poll of an observable condition
    raise AssertionError(f"not within {timeout_s} s: {what}")


# --- clients under load ---


@dataclass
class Answer:
    """One request as its client saw it."""

    tag: str  # also the prompt, so the node's record of the request can be matched to it
    stream: bool
    started: float  # time.monotonic()
    ended: float
    status: int  # 0: no HTTP answer (the connection failed)
    request_id: str = ""
    node: str = ""
    error: str = ""  # what went wrong; "" when answered in full
    code: str = ""  # the OpenAI error's code, when there was one
    content: bool = False  # a stream: content arrived (before its end or its error)

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def prompt(tag: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"fault test {tag}"}]


def ask(client: httpx.Client, url: str, tag: str, model: str = "qwen3-32b") -> Answer:
    answer = Answer(tag, False, time.monotonic(), 0.0, 0)
    try:
        response = client.post(
            url + "/v1/chat/completions",
            json={"model": model, "messages": prompt(tag), "max_tokens": 5},
        )
    except httpx.TransportError as exc:
        answer.error = repr(exc)
    else:
        answer.status = response.status_code
        answer.request_id = response.headers.get("x-request-id", "")
        answer.node = response.headers.get("x-clawdbot-node", "")
        if response.status_code != 200:
            error = response.json()["error"]
            answer.error, answer.code = error["message"], error["code"] or ""
    answer.ended = time.monotonic()
    return answer


def ask_streamed(client: httpx.Client, url: str, tag: str) -> Answer:
    answer = Answer(tag, True, time.monotonic(), 0.0, 0)
    body = {"model": "qwen3-32b", "messages": prompt(tag), "max_tokens": 5, "stream": True}
    done = False
    try:
        with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
            answer.status = response.status_code
            answer.request_id = response.headers.get("x-request-id", "")
            for line in response.iter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith('data: {"error"'):
                    answer.error = line
                elif line.startswith("data: ") and '"content":"' in line:
                    answer.content = True
            if response.status_code != 200:
                answer.error = answer.error or f"HTTP {response.status_code}"
    except httpx.TransportError as exc:
        answer.error = repr(exc)
    if not done and not answer.error:
        answer.error = "the stream ended without [DONE]"
    answer.ended = time.monotonic()
    return answer


class Load:
    """Clients on threads, each sending one request after another until stopped."""

    def __init__(self, key: str, clients: dict[str, Callable[[httpx.Client, str], Answer]]) -> None:
        self.headers = {"authorization": f"Bearer {key}"}
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(name, send), daemon=True)
            for name, send in clients.items()
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, name: str, send: Callable[[httpx.Client, str], Answer]) -> None:
        with httpx.Client(timeout=30, headers=self.headers) as client:
            n = 0
            while not self._stop.is_set():
                n += 1
                self.answers.append(send(client, f"{name}-{n:05d}"))

    def count(self, where: Callable[[Answer], bool]) -> int:
        return sum(1 for a in list(self.answers) if where(a))

    def stop(self) -> list[Answer]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=40)
        assert not any(t.is_alive() for t in self._threads), "a client never returned"
        return list(self.answers)


def logged(request_ids: set[str]) -> dict[str, RequestLog]:
    """The request-log rows of these requests, flushed from the buffer in this process."""

    def all_there() -> bool:
        tasks.flush_request_logs()
        return RequestLog.objects.filter(request_id__in=request_ids).count() == len(request_ids)

    poll(all_there, 10, f"request-log rows of {len(request_ids)} requests")
    return {r.request_id: r for r in RequestLog.objects.filter(request_id__in=request_ids)}


def ejected(gateway: GatewayProcess, node: str) -> bool:
    metrics = httpx.get(gateway.url + "/metrics", timeout=5).text
    return f'clawdbot_node_ejected{{node="{node}"}} 1.0' in metrics


def chat_count(sim: SimProcess) -> int:
    return int(sim.stats()["requests_by_path"].get("/api/chat", 0))


# --- a node killed under load ---

# Both nodes prefill the test prompt (11 tokens) in about 0.8 s, then answer 5 tokens at
# 5 ms each: most of a request's time on a node is before its first byte.
PREFILL_S = 11 * 0.070
PREFILLING = (
    "--api", "ollama", "--model", "qwen3:32b", "--gpu-type", "A10", "--preloaded",
    "--prefill-ms", "70", "--decode-ms", "5", "--answer-tokens", "5", "--parallel", "32",
)  # fmt: skip


def still_prefilling(sim: SimProcess, *, margin_s: float) -> dict[str, bool]:
    """The requests `sim` received less than PREFILL_S - margin_s ago (their tag → streamed?):
    none of them can have had its first byte yet."""
    since = time.time() - (PREFILL_S - margin_s)
    return {
        r["body"]["messages"][-1]["content"].removeprefix("fault test "): bool(r["body"]["stream"])
        for r in sim.requests(limit=100)
        if r["path"] == "/api/chat" and r["time"] >= since
    }


@pytest.mark.timeout(90)
def test_a_node_killed_under_load_fails_no_request_and_reroutes_streams_not_yet_begun(
    gateway: GatewayProcess,
    simulator: Callable[..., SimProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    victim, survivor = simulator(*PREFILLING), simulator(*PREFILLING)
    world = build(
        gateway,
        {"victim": victim, "survivor": survivor},
        # Equal weights: the load is shared between the two.
        node_fields={
            "victim": {"gpu_type": "A10", **ROOMY},
            "survivor": {"gpu_type": "A10", **ROOMY},
        },
    )
    clients: dict[str, Callable[[httpx.Client, str], Answer]] = {}
    for i in range(6):
        clients[f"plain{i}"] = lambda c, tag: ask(c, gateway.url, tag)
        clients[f"stream{i}"] = lambda c, tag: ask_streamed(c, gateway.url, tag)
    load = Load(world.key, clients)
    caught: dict[str, bool] = {}
    try:
        poll(lambda: load.count(lambda a: a.ok) >= 12, 30, "the load under way")

        def both_kinds_prefilling() -> bool:
            nonlocal caught
            caught = still_prefilling(victim, margin_s=0.3)
            return len(set(caught.values())) == 2

        poll(both_kinds_prefilling, 15, "a stream and a plain request prefilling on the victim")
        os.kill(victim.proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        victim.proc.wait(timeout=10)
        poll(
            lambda: load.count(lambda a: a.started > killed_at) >= 30,
            30,
            "30 requests sent after the kill answered",
        )
    finally:
        answers = load.stop()
    plain = [a for a in answers if not a.stream]
    streams = [a for a in answers if a.stream]
    assert [a for a in plain if not a.ok] == [], "no failed non-streaming request"
    # A stream may be cut only once content reached its client; none that had not begun.
    cut = [a for a in streams if not a.ok]
    assert [a for a in cut if not a.content] == []
    by_tag = {a.tag: a for a in answers}
    assert [by_tag[tag] for tag in caught if not by_tag[tag].ok] == []
    rows = logged({by_tag[tag].request_id for tag in caught})
    assert {(row.node, row.attempts, row.status) for row in rows.values()} == {("survivor", 2, 200)}
    # Its failures eject the dead node: no more attempts wasted on it. Once, at the first
    # cooldown, however many requests it had running.
    poll(lambda: ejected(gateway, "victim"), 10, "the dead node ejected")
    shared = redis.Redis.from_url(settings.REDIS_URL)
    assert shared.hget(redis_keys.ejection("victim"), "count") == b"1"
    shared.close()
    with capsys.disabled():
        print(
            f"\nnode killed under load: {len(answers)} requests ({len(plain)} plain, all "
            f"answered); {sum(caught.values())} streams and {len(caught) - sum(caught.values())} "
            f"plain requests caught before their first byte, all rerouted; "
            f"{len(cut)} streams cut after content"
        )


# --- a node that hangs ---

TIMEOUT_S = 1.0


@pytest.fixture
def impatient_gateway(
    redis_client: redis.Redis, transactional_db: None
) -> Iterator[GatewayProcess]:
    """A gateway that gives up on a node silent for a second."""
    process = GatewayProcess(
        env={
            "CLAWDBOT_FIRST_BYTE_TIMEOUT_S": str(TIMEOUT_S),
            "CLAWDBOT_READ_TIMEOUT_S": str(TIMEOUT_S),
        }
    )
    yield process
    process.stop()


@pytest.mark.timeout(60)
def test_a_node_that_hangs_answers_504_after_the_timeout_then_is_ejected(
    impatient_gateway: GatewayProcess,
    simulator: Callable[..., SimProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    gw = impatient_gateway
    # qwen3-32b has one node, which will hang; llama3-8b another, which will not.
    flaky = simulator(*FAST)
    world = build(gw, {"flaky": flaky})
    other = ModelProfile.objects.create(
        model_id="llama3-8b",
        upstream_model="llama3:8b",
        context_window=8192,
        max_output_tokens=1024,
    )
    add_node(
        other, "steady", simulator("--api", "ollama", "--model", "llama3:8b", "--zero-latency")
    )
    gw.wait_for_config()
    clients: dict[str, Callable[[httpx.Client, str], Answer]] = {}
    for i in range(3):
        clients[f"qwen{i}"] = lambda c, tag: ask(c, gw.url, tag)
        clients[f"llama{i}"] = lambda c, tag: ask(c, gw.url, tag, "llama3-8b")
    load = Load(world.key, clients)

    def qwen(answer: Answer) -> bool:
        return answer.tag.startswith("qwen")

    try:
        poll(lambda: load.count(lambda a: a.ok and qwen(a)) >= 10, 30, "qwen answered")
        flaky.control(hang=True)
        hung_at = time.monotonic()
        poll(lambda: ejected(gw, "flaky"), 10, "the hung node ejected")
        ejected_at = time.monotonic()
        reached = chat_count(flaky)
        poll(
            lambda: (
                load.count(lambda a: qwen(a) and a.started > ejected_at) >= 10
                and load.count(lambda a: not qwen(a) and a.started > ejected_at) >= 10
            ),
            10,
            "both models asked again after the ejection",
        )
    finally:
        answers = load.stop()
    assert [a for a in answers if not qwen(a) and not a.ok] == [], "the other model unharmed"
    timed_out = [a for a in answers if a.status == 504]
    refused = [a for a in answers if a.status == 503]
    assert {a.code for a in timed_out} == {"upstream_timeout"}
    assert len(timed_out) >= 3, "CLAWDBOT_EJECT_AFTER timeouts before the ejection"
    assert all(TIMEOUT_S * 0.9 <= a.seconds < TIMEOUT_S + 1.0 for a in timed_out), [
        round(a.seconds, 3) for a in timed_out
    ]
    assert all(a.started < ejected_at for a in timed_out)
    # Once ejected, the node is not asked: its requests are refused at once, for a cooldown.
    assert refused and all("ejected" in a.error and a.seconds < 0.5 for a in refused)
    assert all(a.status == 503 for a in answers if qwen(a) and a.started > ejected_at)
    assert chat_count(flaky) == reached
    assert len(timed_out) + len(refused) + load.count(lambda a: qwen(a) and a.ok) == len(
        [a for a in answers if qwen(a)]
    )
    with capsys.disabled():
        print(
            f"\nnode hung: {len(timed_out)} requests answered 504 after "
            f"{min(a.seconds for a in timed_out):.2f}-{max(a.seconds for a in timed_out):.2f} s "
            f"(timeout {TIMEOUT_S:g} s), ejected {ejected_at - hung_at:.2f} s after the hang; "
            f"{len(refused)} refused at once afterwards"
        )


# --- Redis restarted under load ---


class OwnRedis:
    """A Redis server of this test's own, on a unix socket: restarting the shared one would
    pull it from under everybody else's tests."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="cb-redis-")) / "redis.sock"
        self.url = f"unix://{self.path}"
        self.proc = embedded_redis.start(self.path)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def start(self) -> None:
        self.proc = embedded_redis.start(self.path)

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.path))

    def stop(self) -> None:
        embedded_redis.stop(self.proc)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    yield server
    server.stop()


def configure(sims: dict[str, SimProcess], **node_fields: Any) -> str:
    """Nodes serving qwen3-32b and a key, committed; for gateways that read another Redis
    than the test's (so `build`'s wait for the routing version cannot apply)."""
    profile = ModelProfile.objects.create(
        model_id="qwen3-32b",
        upstream_model="qwen3:32b",
        context_window=8192,
        max_output_tokens=1024,
    )
    for name, sim in sims.items():
        add_node(profile, name, sim, **node_fields)
    return apikey_create(name="faults").secret


RECOVERY_LIMIT_S = 5.0


@pytest.fixture
def gateway_on_own_redis(transactional_db: None, own_redis: OwnRedis) -> Iterator[GatewayProcess]:
    """A gateway on the test's own Redis. It builds its routing snapshot from the database at
    its first request, so what the test configures before then is routed."""
    process = GatewayProcess(env={"REDIS_URL": own_redis.url})
    yield process
    process.stop()


@pytest.mark.timeout(60)
def test_redis_restarted_under_load_recovers_within_seconds_without_a_gateway_restart(
    own_redis: OwnRedis,
    gateway_on_own_redis: GatewayProcess,
    simulator: Callable[..., SimProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    gw = gateway_on_own_redis
    pid = gw.proc.pid
    key = configure({"gpu1": simulator(*PACED)}, **ROOMY)
    load = Load(key, {f"client{i}": lambda c, tag: ask(c, gw.url, tag) for i in range(4)})
    try:
        poll(lambda: load.count(lambda a: a.ok) >= 20, 30, "the load under way")
        own_redis.kill()
        down_at = time.monotonic()
        poll(lambda: load.count(lambda a: not a.ok) >= 4, 10, "requests failing")
        own_redis.start()
        up_at = time.monotonic()
        poll(
            lambda: load.count(lambda a: a.ok and a.started > up_at) >= 40,
            20,
            "40 requests answered after the restart",
        )
    finally:
        answers = load.stop()
    failed = [a for a in answers if not a.ok]
    assert {(a.status, a.code) for a in failed} == {(503, "service_unavailable")}
    assert all("cannot reach Redis" in a.error for a in failed)
    first = min((a for a in answers if a.ok and a.started > up_at), key=lambda a: a.ended)
    recovery_s = first.ended - up_at
    assert recovery_s < RECOVERY_LIMIT_S
    assert [a for a in failed if a.started > first.ended] == [], "recovered for good"
    assert gw.proc.poll() is None and gw.proc.pid == pid, "the same gateway process"
    # The restarted (empty) Redis holds the state again: each request since is recorded.
    recorded = own_redis.client()
    answered = sum(1 for a in answers if a.ok and a.started > first.ended)
    poll(
        lambda: int(recorded.llen(redis_keys.REQUEST_LOG)) >= answered,
        5,
        "requests since the restart in the request-log buffer",
    )
    # Every request released its slot: none is left to lapse with its lease (all were,
    # while the closing script's reload after a restart was lost to cancelled callers).
    poll(lambda: recorded.zcard(redis_keys.slots("gpu1")) == 0, 5, "every slot released")
    recorded.close()
    with capsys.disabled():
        print(
            f"\nRedis restarted under load: down {up_at - down_at:.2f} s "
            f"({len(failed)} requests answered 503 meanwhile), first answer "
            f"{recovery_s:.3f} s after Redis was back, none failed after"
        )


# --- the database unavailable ---


class TcpForwarder:
    """A TCP forwarder to PostgreSQL that can cut every connection through it and refuse new
    ones, then take them again: the database made unavailable to the processes behind it,
    without stopping the server that other tests share."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self.restore()

    def restore(self) -> None:
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(timeout=10)

    def cut(self) -> None:
        asyncio.run_coroutine_threadsafe(self._cut(), self.loop).result(timeout=10)

    def stop(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._forward, "127.0.0.1", self.port, reuse_address=True
        )

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()  # new connections are refused from here
            self._server = None
        for writer in list(self._links):
            writer.transport.abort()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        links = {writer, upstream}
        self._links |= links
        try:
            await asyncio.gather(_copy(reader, upstream), _copy(upstream_reader, writer))
        finally:
            self._links -= links


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except ConnectionError:
        pass  # one side was cut: the other goes with it
    finally:
        sink.transport.abort()


@pytest.fixture
def database_forwarder(transactional_db: None) -> Iterator[TcpForwarder]:
    db = settings.DATABASES["default"]
    if not str(db["ENGINE"]).endswith("postgresql"):
        pytest.skip("cuts a TCP connection to PostgreSQL")
    forwarder = TcpForwarder(str(db.get("HOST") or "127.0.0.1"), int(str(db.get("PORT") or 5432)))
    yield forwarder
    forwarder.stop()


def database_url_through(forwarder: TcpForwarder) -> str:
    db = settings.DATABASES["default"]
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    user = db.get("USER") or "postgres"
    return f"postgres://{user}{password}@127.0.0.1:{forwarder.port}/{db['NAME']}"


def snapshot_version(gateway: GatewayProcess) -> int:
    return int(httpx.get(gateway.url + "/readyz", timeout=5).json()["snapshot_version"])


@pytest.fixture
def gateway_behind(
    redis_client: redis.Redis, database_forwarder: TcpForwarder
) -> Iterator[GatewayProcess]:
    """A gateway whose database connections go through the forwarder."""
    process = GatewayProcess(env={"DATABASE_URL": database_url_through(database_forwarder)})
    yield process
    process.stop()


@pytest.fixture
def worker_behind(database_forwarder: TcpForwarder) -> Iterator[CeleryProcess]:
    """A real Celery worker for the request-log flush, its database behind the forwarder too
    (no beat: the test sends the flush when it wants one)."""
    worker = CeleryProcess(env={"DATABASE_URL": database_url_through(database_forwarder)})
    yield worker
    worker.stop()


@pytest.mark.timeout(90)
def test_with_the_database_down_v1_answers_from_the_snapshot_and_the_logs_arrive_after(
    redis_client: redis.Redis,
    database_forwarder: TcpForwarder,
    gateway_behind: GatewayProcess,
    worker_behind: CeleryProcess,
    simulator: Callable[..., SimProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    gw, worker = gateway_behind, worker_behind
    world = build(gw, {"gpu1": simulator(*PACED)}, node_fields={"gpu1": ROOMY})
    clients: dict[str, Callable[[httpx.Client, str], Answer]] = {}
    for i in range(3):
        clients[f"plain{i}"] = lambda c, tag: ask(c, gw.url, tag)
    for i in range(2):
        clients[f"stream{i}"] = lambda c, tag: ask_streamed(c, gw.url, tag)
    load = Load(world.key, clients)
    try:
        poll(lambda: load.count(lambda a: a.ok) >= 10, 30, "the load under way")
        database_forwarder.cut()
        cut_at = time.monotonic()
        before = snapshot_version(gw)
        bump_now()  # a config change announced: the gateway tries to rebuild, and cannot
        target = int(redis_client.get(redis_keys.ROUTING_VERSION) or 0)
        poll(lambda: "snapshot rebuild failed" in gw.output(), 10, "a failed rebuild")
        models = httpx.get(world.base_url + "/models", headers=world.headers(), timeout=5)
        assert models.status_code == 200 and models.json()["data"][0]["id"] == "qwen3-32b"
        # The flush meets the outage: it fails, and the entries wait in the buffer.
        tasks.flush_request_logs.delay()
        poll(lambda: "OperationalError" in worker.output(), 15, "the flush failing")
        poll(
            lambda: (
                load.count(lambda a: a.ok and a.started > cut_at) >= 30
                and time.monotonic() - cut_at > 2.0
            ),
            30,
            "30 requests answered during the outage",
        )
        assert snapshot_version(gw) == before < target, "still on the last snapshot"
        assert RequestLog.objects.count() == 0
        database_forwarder.restore()
        back_at = time.monotonic()
        rebuilt_s = poll(lambda: snapshot_version(gw) >= target, 10, "the rebuild")
        poll(lambda: load.count(lambda a: a.ok and a.started > back_at) >= 10, 10, "more")
    finally:
        answers = load.stop()
    assert [a for a in answers if not a.ok] == [], "no request failed for the outage"
    during = sum(1 for a in answers if a.started > cut_at and a.ended < back_at)
    served = {a.request_id for a in answers}

    def all_flushed() -> bool:
        tasks.flush_request_logs.delay()  # as beat sends it every 2 s
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if RequestLog.objects.filter(request_id__in=served).count() == len(served):
                return True
            time.sleep(0.05)  # bounded poll of the database
        return False

    arrived_s = poll(all_flushed, 30, f"request-log rows of all {len(served)} requests")
    with capsys.disabled():
        print(
            f"\ndatabase down {back_at - cut_at:.2f} s: {during} requests answered from the "
            f"snapshot meanwhile, none failed; snapshot rebuilt {rebuilt_s:.2f} s after it was "
            f"back; all {len(served)} request logs in the database {arrived_s:.2f} s after the "
            "first flush sent then"
        )


# --- a gateway process killed while holding slots ---


@pytest.fixture
def doomed_gateway(gateway: GatewayProcess) -> Iterator[GatewayProcess]:
    """A second gateway process beside `gateway`, to be killed."""
    process = GatewayProcess()
    yield process
    process.stop()


def slot_expiries(client: redis.Redis, node: str) -> list[float]:
    """When the node's slots lapse, as Unix times."""
    members: list[tuple[bytes, float]] = client.zrange(  # type: ignore[assignment]
        redis_keys.slots(node), 0, -1, withscores=True
    )
    return [score / 1000 for _, score in members]


@pytest.mark.timeout(90)
def test_a_killed_gateway_s_slots_free_themselves_when_their_leases_expire(
    gateway: GatewayProcess,
    doomed_gateway: GatewayProcess,
    redis_client: redis.Redis,
    simulator: Callable[..., SimProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    victim = doomed_gateway
    sim = simulator(*FAST, "--hang")
    world = build(
        gateway, {"gpu1": sim}, node_fields={"gpu1": {"max_concurrent": 2, "queue_size": 0}}
    )
    victim.wait_for_config()
    holders = Load(
        world.key, {f"holder{i}": lambda c, tag: ask(c, victim.url, tag) for i in range(2)}
    )
    try:
        poll(
            lambda: len(slot_expiries(redis_client, "gpu1")) == 2 and sim.stats()["in_flight"] == 2,
            10,
            "both slots held through the victim",
        )
        with httpx.Client(timeout=10, headers=world.headers()) as client:
            assert "at capacity" in ask(client, gateway.url, "check").error
        os.kill(victim.proc.pid, signal.SIGKILL)
        killed_at, killed_at_wall = time.monotonic(), time.time()
        victim.proc.wait(timeout=10)
    finally:
        holders.stop()
    # Nobody renews them now: they lapse at these times.
    expiries = slot_expiries(redis_client, "gpu1")
    assert len(expiries) == 2
    lapse_at = killed_at + (min(expiries) - killed_at_wall)  # as a monotonic time
    sim.control(hang=False)

    def paced(client: httpx.Client, tag: str) -> Answer:
        answer = ask(client, gateway.url, tag)
        if not answer.ok:
            time.sleep(0.05)  # a client trying again every 50 ms, not synchronisation
        return answer

    load = Load(world.key, {f"client{i}": paced for i in range(2)})
    try:
        poll(
            lambda: load.count(lambda a: a.ok) >= 2,
            LEASE_TTL_MS / 1000 + 5,
            "the survivor serving on the freed slots",
        )
    finally:
        answers = load.stop()
    refused = [a for a in answers if not a.ok]
    assert all(a.status == 503 and "at capacity" in a.error for a in refused)
    first = min((a for a in answers if a.ok), key=lambda a: a.ended)
    freed_s = first.ended - killed_at
    # Held until their leases lapsed, not a moment less, and usable as soon as they had.
    assert first.ended >= lapse_at - 0.05
    assert first.started <= lapse_at + 1.0
    assert freed_s <= LEASE_TTL_MS / 1000 + 1.0
    with capsys.disabled():
        print(
            f"\ngateway killed holding 2 slots: refused {len(refused)} times as at capacity, "
            f"then served {freed_s:.2f} s after the kill, {first.ended - lapse_at:+.2f} s from "
            f"the lease expiry (leases last {LEASE_TTL_MS / 1000:g} s, renewed every 10 s)"
        )
