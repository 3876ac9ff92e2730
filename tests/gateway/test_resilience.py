"""Retries, ejection, admission limits, disconnects and broken streams, against real
gateway and simulator processes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest
import redis
from django.conf import settings
from openai.types.chat import ChatCompletionMessageParam

from clawdbot_site import redis_keys
from tests.gateway.world import World, build
from tests.gateways import GatewayProcess, free_port
from tests.simulators import SimProcess

pytestmark = pytest.mark.slow  # real servers and processes

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]
FAST = ("--api", "ollama", "--model", "qwen3:32b", "--zero-latency")
PACED = ("--model", "qwen3:32b", "--preloaded", "--prefill-ms", "0", "--decode-ms", "10")


class DeadNode:
    """A node URL where nothing listens: connections are refused."""

    def __init__(self) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"


def chat(world: World, **extra: object) -> httpx.Response:
    return httpx.post(
        world.base_url + "/chat/completions",
        headers=world.headers(),
        json={"model": "qwen3-32b", "messages": HELLO, **extra},
        timeout=20,
    )


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)  # bounded poll of an observable condition
    raise AssertionError("condition not reached in time")


def slots(node: str) -> int:
    client = redis.Redis.from_url(settings.REDIS_URL)
    return int(client.zcount(redis_keys.slots(node), int(time.time() * 1000), "+inf"))


def test_refused_connection_is_retried_on_another_node_then_ejected(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    # The dead node has the higher weight, so least-expected-wait tries it first.
    world = build(
        gateway,
        {"dead": DeadNode(), "live": simulator(*FAST)},  # type: ignore[dict-item]
        node_fields={"dead": {"gpu_type": "H200"}, "live": {"gpu_type": "A10"}},
    )
    for _ in range(3):
        response = chat(world)
        assert response.status_code == 200, response.text
        assert response.headers["x-clawdbot-node"] == "live"
        assert response.headers["x-clawdbot-attempts"] == "2"
    # Three failures in a row eject the dead node: no more wasted attempts.
    response = chat(world)
    assert response.status_code == 200
    assert "x-clawdbot-attempts" not in response.headers
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'clawdbot_node_ejected{node="dead"} 1.0' in metrics


def test_5xx_before_the_first_byte_is_retried_and_ejects_the_node(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    broken = simulator(*FAST, "--error-rate", "1.0", "--error-status", "500")
    world = build(
        gateway,
        {"broken": broken, "good": simulator(*FAST)},
        node_fields={"broken": {"gpu_type": "H200"}, "good": {"gpu_type": "A10"}},
    )
    for _ in range(5):
        assert chat(world).status_code == 200
    assert broken.stats()["requests_by_path"].get("/api/chat") == 3


def test_every_node_failing_gives_an_openai_error_not_a_crash(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    world = build(gateway, {"only": simulator(*FAST, "--error-rate", "1.0")})
    response = chat(world)
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "server_error" and "Traceback" not in response.text


def test_no_ready_node_is_503_with_retry_after(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    world = build(gateway, {"gpu1": simulator(*FAST)}, node_fields={"gpu1": {"draining": True}})
    response = chat(world)
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert "No node is ready" in response.json()["error"]["message"]


async def _start_hung_request(world: World, client: httpx.AsyncClient) -> asyncio.Task[object]:
    return asyncio.create_task(
        client.post(
            world.base_url + "/chat/completions",
            headers=world.headers(),
            json={"model": "qwen3-32b", "messages": HELLO},
        )
    )


async def _poll(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(condition):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def test_full_queue_is_503_and_a_disconnect_frees_the_slot(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    sim = simulator(*FAST, "--hang")
    world = await asyncio.to_thread(
        build, gateway, {"gpu1": sim}, node_fields={"gpu1": {"max_concurrent": 1, "queue_size": 0}}
    )
    async with httpx.AsyncClient(timeout=20) as client:
        hung = await _start_hung_request(world, client)
        await _poll(lambda: sim.stats()["in_flight"] == 1)
        assert slots("gpu1") == 1
        busy = await client.post(
            world.base_url + "/chat/completions",
            headers=world.headers(),
            json={"model": "qwen3-32b", "messages": HELLO},
        )
        assert busy.status_code == 503
        assert busy.headers["retry-after"] == "1"
        assert "at capacity" in busy.json()["error"]["message"]
        hung.cancel()  # the client goes away mid-request
    # The gateway cancels its upstream call and frees the slot at once.
    await _poll(lambda: slots("gpu1") == 0)
    await _poll(lambda: sim.stats()["in_flight"] == 0)
    sim.control(hang=False)
    assert (await asyncio.to_thread(chat, world)).status_code == 200


async def test_queued_request_waits_with_keepalives_then_runs(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    sim = simulator(*FAST, "--hang")
    world = await asyncio.to_thread(
        build, gateway, {"gpu1": sim}, node_fields={"gpu1": {"max_concurrent": 1, "queue_size": 1}}
    )
    async with httpx.AsyncClient(timeout=20) as client:
        first = await _start_hung_request(world, client)
        await _poll(lambda: sim.stats()["in_flight"] == 1)
        lines: list[str] = []

        async def queued_stream() -> int:
            async with client.stream(
                "POST",
                world.base_url + "/chat/completions",
                headers=world.headers(),
                json={"model": "qwen3-32b", "messages": HELLO, "stream": True},
            ) as response:
                async for line in response.aiter_lines():
                    lines.append(line)
                    if line.startswith(": queued"):
                        sim.control(hang=False)  # the node frees up; the queue moves
                return response.status_code

        second = asyncio.create_task(queued_stream())
        await _poll(lambda: any(line.startswith(": queued") for line in lines))
        third = await client.post(
            world.base_url + "/chat/completions",
            headers=world.headers(),
            json={"model": "qwen3-32b", "messages": HELLO},
        )
        assert third.status_code in (200, 503)  # 503 while the queue is full, 200 once it moved
        assert await second == 200
        assert [line for line in lines if line][-1] == "data: [DONE]"
        assert (await first).status_code == 200  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["error", "abrupt"])
def test_mid_stream_drop_ends_with_an_error_event(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess], mode: str
) -> None:
    # Tokens paced 10 ms apart, so the first ones reach the client before the drop (a
    # failure that arrives with them, before anything was sent, goes to another node).
    sim = simulator(*PACED, "--drop-mid-stream-after", "3", "--drop-mode", mode)
    world = build(gateway, {"gpu1": sim})
    client = openai.OpenAI(base_url=world.base_url, api_key=world.key, max_retries=0)
    stream = client.chat.completions.create(model="qwen3-32b", messages=HELLO, stream=True)
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    assert len(received) >= 3, "content before the drop reached the client"
    assert info.value.type == "server_error"


def test_queue_timeout_is_503(
    gateway_process: GatewayProcess,
    transactional_db: None,
    simulator: Callable[..., SimProcess],
) -> None:
    sim = simulator(*FAST, "--hang")
    world = build(
        gateway_process, {"gpu1": sim}, node_fields={"gpu1": {"max_concurrent": 1, "queue_size": 4}}
    )

    async def scenario() -> tuple[int, str]:
        async with httpx.AsyncClient(timeout=20) as client:
            hung = await _start_hung_request(world, client)
            await _poll(lambda: sim.stats()["in_flight"] == 1)
            waited = await client.post(
                world.base_url + "/chat/completions",
                headers=world.headers(),
                json={"model": "qwen3-32b", "messages": HELLO},
            )
            hung.cancel()
            return waited.status_code, waited.json()["error"]["message"]

    status, message = asyncio.run(scenario())
    assert status == 503 and "Timed out after 3 s waiting" in message


async def test_keepalives_flow_while_the_node_is_still_in_prefill(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    # Ollama sends its status line only with the first token, so the gateway has nothing
    # from the node to pass on until then: it must keep the client's connection alive itself.
    sim = simulator(*FAST, "--hang")
    world = await asyncio.to_thread(build, gateway, {"gpu1": sim})
    lines: list[str] = []
    async with (
        httpx.AsyncClient(timeout=20) as client,
        client.stream(
            "POST",
            world.base_url + "/chat/completions",
            headers=world.headers(),
            json={"model": "qwen3-32b", "messages": HELLO, "stream": True},
        ) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            lines.append(line)
            if line == ": keep-alive" and lines.count(line) == 2:
                sim.control(hang=False)  # the prefill ends; the answer follows
    data = [line for line in lines if line.startswith("data: ")]
    assert lines.index(": keep-alive") < lines.index(data[0])
    assert '"role":"assistant"' in data[0] and data[-1] == "data: [DONE]"
    # The headers went out before a node answered: the node is named just before the answer.
    assert "x-clawdbot-node" not in response.headers
    assert lines[lines.index(data[0]) - 2] == ": x-clawdbot-node gpu1"


def test_a_stream_that_fails_before_its_first_token_goes_to_another_node(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    # The failing node has the higher weight, so it is tried first; its error line comes
    # before any content, so the client must get the other node's whole answer.
    failing = simulator(*FAST, "--drop-mid-stream-after", "0", "--drop-mode", "error")
    world = build(
        gateway,
        {"failing": failing, "good": simulator(*FAST)},
        node_fields={"failing": {"gpu_type": "H200"}, "good": {"gpu_type": "A10"}},
    )
    client = openai.OpenAI(base_url=world.base_url, api_key=world.key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="qwen3-32b", messages=HELLO, stream=True
    )
    assert raw.headers["x-clawdbot-node"] == "good"
    assert raw.headers["x-clawdbot-attempts"] == "2"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
    assert text


def test_a_node_without_the_model_is_skipped_for_one_that_has_it(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    # A node answering 404 for a model the gateway routes to it is misconfigured (the model
    # is not pulled there): another node can still serve the request.
    wrong = simulator("--api", "ollama", "--model", "llama3:8b", "--zero-latency")
    world = build(
        gateway,
        {"wrong": wrong, "good": simulator(*FAST)},
        node_fields={"wrong": {"gpu_type": "H200"}, "good": {"gpu_type": "A10"}},
    )
    response = chat(world)
    assert response.status_code == 200, response.text
    assert response.headers["x-clawdbot-node"] == "good"
    assert response.headers["x-clawdbot-attempts"] == "2"


def test_an_openai_node_error_mid_stream_is_the_last_event(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    # vLLM follows its error event with `data: [DONE]`; a client reading past the error
    # would take [DONE] for a normal end, so the gateway's stream ends at the error.
    sim = simulator(
        "--api", "openai", *PACED, "--drop-mid-stream-after", "3", "--drop-mode", "error"
    )
    world = build(gateway, {"gpu1": sim}, api="openai")
    with world.stream_chat() as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert '"content"' in events[1]
    assert events[-1].startswith('data: {"error"')


class CommentThenErrorNode:
    """An OpenAI-compatible node whose stream is a `: ping` comment, then an error event:
    nothing of an answer, so the request must still go to another node."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                self.wfile.write(b": ping\n\n")
                self.wfile.flush()
                time.sleep(0.05)  # the node's own pace: its comment and error come apart
                self.wfile.write(
                    b'data: {"error": {"message": "engine dead", "type": "InternalServerError",'
                    b' "param": null, "code": 500}}\n\ndata: [DONE]\n\n'
                )

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_node_comment_before_an_error_is_not_content(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    bad = CommentThenErrorNode()
    try:
        world = build(
            gateway,
            {"bad": bad, "good": simulator("--api", "openai", *PACED)},  # type: ignore[dict-item]
            api="openai",
            node_fields={"bad": {"gpu_type": "H200"}, "good": {"gpu_type": "A10"}},
        )
        with world.stream_chat() as response:
            assert response.status_code == 200
            lines = [line for line in response.iter_lines() if line]
        assert "error" not in "".join(lines)
        assert lines[-1] == "data: [DONE]" and any('"content"' in line for line in lines)
        if lines[0] == ": ping":  # passed on as a keep-alive, before any node had answered
            assert "x-clawdbot-node" not in response.headers
        else:  # the comment and the error reached the gateway in one read: nothing was sent
            assert response.headers["x-clawdbot-node"] == "good"
    finally:
        bad.stop()


def test_a_clients_own_error_in_an_answer_is_not_the_nodes_failure(
    gateway: GatewayProcess, simulator: Callable[..., SimProcess]
) -> None:
    # Asking for more embedding dimensions than the model has is the client's mistake, found
    # only once the node answered: 400 every time, and the node is never ejected for it.
    world = build(gateway, {"gpu1": simulator(*FAST, "--embedding-dim", "8")})
    for _ in range(4):
        response = httpx.post(
            world.base_url + "/embeddings",
            headers=world.headers(),
            json={"model": "qwen3-32b", "input": "hello", "dimensions": 16},
            timeout=20,
        )
        assert response.status_code == 400, response.text
        assert "x-clawdbot-attempts" not in response.headers
    assert redis.Redis.from_url(settings.REDIS_URL).hget(redis_keys.ejection("gpu1"), "fails") in (
        None,
        b"0",
    )
