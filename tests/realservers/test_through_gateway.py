"""Real inference servers onboarded with `clawdbot onboard` and driven through a real gateway
with the official openai client: llama-cpp-python's server and vLLM on the CPU, each serving
a tiny random-weight model built locally (tests/realservers/tinymodel.py).

The model's logits are all equal, so a greedy request (temperature 0) generates exactly
max_tokens tokens: counts can be asserted exactly, and a long answer stays long."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import StringIO

import httpx
import openai
import pytest
import redis
from django.conf import settings
from django.core.management import CommandError, call_command
from openai.types.chat import ChatCompletionMessageParam

from gateway import tasks
from gateway.models import RequestLog
from gateway.services import apikey_create
from nodes import server_load_store
from nodes.models import ModelProfile, Node
from nodes.tasks import scrape_server_load
from tests.conftest import clean_gateway_state
from tests.gateways import GatewayProcess
from tests.realservers.servers import RealServer, metric

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello to the node."}]
# What llama-cpp-python prints when its streaming loop finds the client gone and stops.
LLAMACPP_STOPPED = "Disconnected from client"
CHAT_POSTS = re.compile(r'"POST /v1/chat/completions HTTP/1\.1" (\d{3})')


@dataclass(frozen=True)
class Behaviour:
    """What each real server does where servers differ, as measured against it."""

    # The server kind `clawdbot onboard` detects.
    kind: str
    # Whether it says its context window (else onboarding needs --context-window).
    says_window: bool
    # Whether a stream honours stream_options.include_usage with a usage chunk.
    stream_usage: bool
    # Parameters the gateway passes on unchecked and the server refuses: the body's extra
    # fields, a word of the server's message, and the status the client gets.
    refusals: tuple[tuple[dict[str, object], str, int], ...]
    # The client's status when the server refuses a streamed prompt as too long for it.
    stream_overflow_status: int
    # Whether it exports load gauges the scrape reads (nodes.load_scraper).
    gauges: bool


BEHAVIOUR = {
    "llama_cpp_python": Behaviour(
        kind="openai",  # owned_by "me" in /v1/models, no /props: a generic server
        says_window=False,
        stream_usage=False,
        # llama-cpp-python answers a body it cannot validate with HTTP 500 (its route error
        # handler catches FastAPI's validation error), so to the gateway it is a failing node.
        refusals=(({"mirostat_mode": 7}, "mirostat_mode", 500),),
        # The prompt's length is checked once the stream has begun: a 200, then the
        # connection closes; the gateway calls that a node failing before the first token.
        stream_overflow_status=502,
        gauges=False,
    ),
    "vllm_cpu": Behaviour(
        kind="vllm",
        says_window=True,
        stream_usage=True,
        refusals=(
            # Refused while vLLM builds the sampling parameters: an HTTP 400, streamed or not.
            ({"repetition_penalty": -1.0}, "repetition_penalty", 400),
            # Refused by vLLM's engine once the answer has begun: a stream answers 200 and
            # says the 400 in its first event (`data: {"error": {..., "code": 400}}`).
            ({"logit_bias": {"99999": 5}}, "logit_bias", 400),
        ),
        stream_overflow_status=400,
        gauges=True,
    ),
}


@dataclass
class Onboarded:
    server: RealServer
    gateway: GatewayProcess
    key: str
    node: Node
    profile: ModelProfile

    @property
    def model(self) -> str:
        return self.profile.model_id

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.gateway.url + "/v1", api_key=self.key, max_retries=0, timeout=120
        )

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.gateway.url + "/v1", api_key=self.key, max_retries=0, timeout=120
        )

    def chat_posts(self) -> list[str]:
        """The statuses of the chat completions the server logged receiving, oldest first."""
        return CHAT_POSTS.findall(self.server.log())


def onboard(*args: str) -> str:
    out = StringIO()
    call_command("onboard", *args, stdout=out)
    return out.getvalue()


def onboard_args(server: RealServer, *extra: str) -> list[str]:
    args = ["--name", server.kind, "--url", server.url, "--gpu-type", "other", *extra]
    if not BEHAVIOUR[server.kind].says_window and "--context-window" not in extra:
        args += ["--context-window", str(server.context_window)]
    return args


def logged(request_id: str) -> RequestLog:
    """The request's log row, once the closing pipeline (after the answer) has buffered it."""

    def flushed() -> bool:
        tasks.flush_request_logs()
        return RequestLog.objects.filter(request_id=request_id).exists()

    poll(flushed, timeout_s=10, what=f"request log row {request_id}")
    return RequestLog.objects.get(request_id=request_id)


def poll(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)  # bounded poll of an observable condition
    raise AssertionError(f"not within {timeout_s} s: {what}")


def onboard_world(server: RealServer, gateway: GatewayProcess, *extra: str) -> Onboarded:
    """The server onboarded as a node with `clawdbot onboard`, a key, and the gateway routing
    on both."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    clean_gateway_state(client)
    client.close()
    onboard(*onboard_args(server, *extra))
    node = Node.objects.get(name=server.kind)
    profile = ModelProfile.objects.get(upstream_model=server.model)
    key = apikey_create(name="real-servers").secret
    gateway.wait_for_config()
    return Onboarded(server, gateway, key, node, profile)


@pytest.fixture
def onboarded(real: RealServer, real_gateway: GatewayProcess, transactional_db: None) -> Onboarded:
    return onboard_world(real, real_gateway)


# --- onboarding -------------------------------------------------------------------------------


def test_onboard_detects_the_server_and_reads_its_context_window(
    real: RealServer, transactional_db: None
) -> None:
    behaviour = BEHAVIOUR[real.kind]
    base = ["--name", "node1", "--url", real.url, "--gpu-type", "other"]
    if behaviour.says_window:
        out = onboard(*base)
        assert f"{real.model} (context {real.context_window})" in out, out
    else:
        # llama-cpp-python says its n_ctx nowhere (no /props, nothing in /v1/models).
        with pytest.raises(CommandError) as refused:
            onboard(*base)
        assert "--context-window" in str(refused.value)
        assert "n_ctx" in str(refused.value), "the hint names llama-cpp-python's flag"
        out = onboard(*base, "--context-window", str(real.context_window))
    assert "detected a" in out, out
    assert "node node1 is READY" in out, out
    node = Node.objects.get(name="node1")
    assert (node.state, node.api_kind, node.server_kind) == ("READY", "openai", behaviour.kind)
    profile = ModelProfile.objects.get(upstream_model=real.model)
    assert profile.context_window == real.context_window


# --- answers ---------------------------------------------------------------------------------


def test_chat_and_text_completions_answer_with_exact_usage(onboarded: Onboarded) -> None:
    client = onboarded.client()
    raw = client.chat.completions.with_raw_response.create(
        model=onboarded.model, messages=HELLO, max_tokens=6, temperature=0
    )
    chat = raw.parse()
    assert raw.headers["x-clawdbot-node"] == onboarded.node.name
    assert chat.model == onboarded.model
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content
    assert chat.choices[0].finish_reason == "length"
    assert chat.usage is not None and chat.usage.completion_tokens == 6
    assert chat.usage.prompt_tokens > 5, "the chat template's tokens were counted"

    text = client.completions.create(
        model=onboarded.model, prompt="One two three", max_tokens=4, temperature=0
    )
    assert text.model == onboarded.model
    assert text.choices[0].text and text.choices[0].finish_reason == "length"
    assert text.usage is not None and text.usage.completion_tokens == 4
    assert onboarded.chat_posts()[-1:] == ["200"]


def test_streams_end_with_usage_when_asked(onboarded: Onboarded) -> None:
    client = onboarded.client()
    raw = client.chat.completions.with_raw_response.create(
        model=onboarded.model,
        messages=HELLO,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    with raw.parse() as stream:
        chunks = list(stream)
    content = [c.choices[0].delta.content for c in chunks if c.choices]
    # A busy vLLM may put two tokens in one delta: count them from the usage chunk.
    assert 1 <= len([d for d in content if d]) <= 8
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    assert {c.model for c in chunks} == {onboarded.model}
    if BEHAVIOUR[onboarded.server.kind].stream_usage:
        usage = chunks[-1].usage
        assert chunks[-1].choices == [] and usage is not None
        assert usage.completion_tokens == 8
        assert usage.total_tokens == usage.prompt_tokens + 8
    else:
        # llama-cpp-python ignores stream_options: no usage chunk comes, and the gateway
        # makes none up. It still counts what it streamed for the request log and limits.
        assert all(c.usage is None for c in chunks)
    row = logged(raw.headers["x-request-id"])
    assert (row.status, row.stream) == (200, True)
    if BEHAVIOUR[onboarded.server.kind].stream_usage:
        assert row.completion_tokens == 8
    else:
        # Counted from the stream's events, which include the role's and the finish's.
        assert 8 <= (row.completion_tokens or 0) <= 10, row.completion_tokens

    text_chunks = list(
        client.completions.create(
            model=onboarded.model,
            prompt="One two three",
            max_tokens=5,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    # As above, a busy vLLM may put two tokens in one event: the usage chunk counts them.
    assert 1 <= len([c for c in text_chunks if c.choices and c.choices[0].text]) <= 5
    if BEHAVIOUR[onboarded.server.kind].stream_usage:
        text_usage = text_chunks[-1].usage
        assert text_usage is not None and text_usage.completion_tokens == 5

    # Without include_usage the gateway still asks the node for it (to count tokens), but
    # the client gets no usage chunk it did not ask for.
    plain = list(
        client.chat.completions.create(
            model=onboarded.model, messages=HELLO, max_tokens=3, temperature=0, stream=True
        )
    )
    assert plain and all(c.usage is None and c.choices for c in plain)


def test_concurrent_streams_all_complete(onboarded: Onboarded) -> None:
    async def one(client: openai.AsyncOpenAI, i: int) -> tuple[str, int]:
        stream = await client.chat.completions.create(
            model=onboarded.model,
            messages=[{"role": "user", "content": f"Count to {i}."}],
            max_tokens=20 + i,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        ids, deltas, usage = set(), 0, None
        async for chunk in stream:
            ids.add(chunk.id)
            if chunk.choices and chunk.choices[0].delta.content:
                deltas += 1
            if chunk.usage is not None:
                usage = chunk.usage.completion_tokens
        assert len(ids) == 1
        # The usage chunk counts the tokens however a busy server grouped them into deltas;
        # llama-cpp-python sends none, and a delta a token.
        return ids.pop(), usage if usage is not None else deltas

    async def all_of_them() -> list[tuple[str, int]]:
        async with onboarded.async_client() as client:
            return await asyncio.gather(*(one(client, i) for i in range(4)))

    results = asyncio.run(all_of_them())
    assert [tokens for _, tokens in results] == [20, 21, 22, 23]
    assert len({stream_id for stream_id, _ in results}) == 4, "four distinct answers"


# --- refusals -------------------------------------------------------------------------------


def test_a_prompt_past_the_context_window_is_refused_before_the_node(
    onboarded: Onboarded,
) -> None:
    window = onboarded.server.context_window
    before = len(onboarded.chat_posts())
    too_long: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "one two three four " * window}
    ]
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as refused:
            onboarded.client().chat.completions.create(
                model=onboarded.model, messages=too_long, max_tokens=4, stream=stream
            )
        assert refused.value.status_code == 400
        assert refused.value.code == "context_length_exceeded"
        assert str(window) in refused.value.message, refused.value.message
    # The server logs every request it receives: it received none of these.
    onboarded.client().chat.completions.create(
        model=onboarded.model, messages=HELLO, max_tokens=1, temperature=0
    )
    assert onboarded.chat_posts()[before:] == ["200"]


def test_the_nodes_own_refusals_reach_the_client_with_its_words(onboarded: Onboarded) -> None:
    """vLLM's 400s reach the client as 400s, whether the server said it as the HTTP status or
    in a stream's first event; llama-cpp-python's refusals come as 500s, and stay 500s."""
    for extra, word, status in BEHAVIOUR[onboarded.server.kind].refusals:
        before = len(onboarded.chat_posts())
        for stream in (False, True):
            with pytest.raises(openai.APIStatusError) as refused:
                onboarded.client().chat.completions.create(
                    model=onboarded.model,
                    messages=HELLO,
                    max_tokens=4,
                    stream=stream,
                    extra_body=extra,
                )
            assert refused.value.status_code == status, (extra, stream, refused.value)
            assert word in refused.value.message, refused.value.message
            if status == 400:
                assert isinstance(refused.value, openai.BadRequestError)
                assert refused.value.type == "invalid_request_error"
        # The node itself refused each, once (the gateway does not check these parameters,
        # and has no other node to retry on).
        assert len(onboarded.chat_posts()[before:]) == 2, onboarded.chat_posts()[before:]


def test_a_window_larger_than_the_servers_is_refused_by_the_node(
    real: RealServer, real_gateway: GatewayProcess, transactional_db: None
) -> None:
    """A profile given a larger window than the server was started with: the gateway lets a
    long prompt through, and the server's own context-length refusal reaches the client as
    OpenAI's 400 context_length_exceeded (a stream: as each server allows, see BEHAVIOUR)."""
    world = onboard_world(real, real_gateway, "--context-window", str(4 * real.context_window))
    if BEHAVIOUR[real.kind].says_window:
        # Onboarding keeps the window the server says over a larger one asked for.
        assert world.profile.context_window == real.context_window
    # As after the server was restarted with a smaller window, or a typo in the admin (a
    # save, which moves the routing version).
    world.profile.context_window = 4 * real.context_window
    world.profile.save()
    real_gateway.wait_for_config()
    long_prompt: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "one two three four " * (real.context_window // 2)}
    ]
    before = len(world.chat_posts())
    with pytest.raises(openai.BadRequestError) as refused:
        world.client().chat.completions.create(
            model=world.model, messages=long_prompt, max_tokens=4
        )
    assert refused.value.code == "context_length_exceeded"
    assert str(real.context_window) in refused.value.message, "the server's own figure"
    assert world.chat_posts()[before:] == ["400"], "the node refused it"

    with pytest.raises(openai.APIStatusError) as streamed:
        world.client().chat.completions.create(
            model=world.model, messages=long_prompt, max_tokens=4, stream=True
        )
    assert streamed.value.status_code == BEHAVIOUR[real.kind].stream_overflow_status
    if streamed.value.status_code == 400:
        assert streamed.value.code == "context_length_exceeded"


# --- a client leaving -------------------------------------------------------------------------


def test_a_client_leaving_mid_stream_stops_generation_on_the_node(
    onboarded: Onboarded,
) -> None:
    server = onboarded.server
    max_tokens = server.context_window // 2
    generated_before = _generated_tokens(server)
    stopped_before = server.log().count(LLAMACPP_STOPPED)
    stream = onboarded.client().chat.completions.create(
        model=onboarded.model,
        messages=HELLO,
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
    )
    received = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            received += 1
            if received == 3:
                break
    stream.close()  # closes the connection: the gateway sees the client leave

    if server.kind == "llama_cpp_python":
        # Its streaming loop checks for a disconnected client after each token and says so
        # when it stops generating.
        poll(
            lambda: server.log().count(LLAMACPP_STOPPED) > stopped_before,
            timeout_s=20,
            what="llama-cpp-python stopping the abandoned stream",
        )
    else:
        poll(
            lambda: _vllm_metric(server, "vllm:num_requests_running") == 0,
            timeout_s=20,
            what="vLLM running no request",
        )
        generated = _generated_tokens(server) - generated_before
        assert 3 <= generated < max_tokens // 2, f"vLLM generated {generated} of {max_tokens}"
    # The node is free again at once: a request after it is answered in full.
    answer = onboarded.client().chat.completions.create(
        model=onboarded.model, messages=HELLO, max_tokens=2, temperature=0
    )
    assert answer.usage is not None and answer.usage.completion_tokens == 2


# --- load signals -------------------------------------------------------------------------


def test_the_load_scrape_reads_the_servers_own_gauges(onboarded: Onboarded) -> None:
    name = onboarded.node.name
    if not BEHAVIOUR[onboarded.server.kind].gauges:
        assert scrape_server_load() == 0, "a server without gauges is not asked"
        assert server_load_store.latest([name])[name] is None
        return
    stream = onboarded.client().chat.completions.create(
        model=onboarded.model,
        messages=HELLO,
        max_tokens=onboarded.server.context_window // 2,
        temperature=0,
        stream=True,
    )
    with stream:
        # Read while the answer is being generated: the request is running on the server.
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        assert scrape_server_load() == 1
        load = server_load_store.latest([name])[name]
    assert load is not None
    assert (load["running"], load["waiting"], load["stale"]) == (1, 0, False)
    assert load["kv"] is not None and 0 < load["kv"] < 0.01, "a few blocks of a large cache"


def _vllm_metric(server: RealServer, name: str) -> float:
    return metric(httpx.get(server.url + "/metrics", timeout=10).text, name)


def _generated_tokens(server: RealServer) -> float:
    if server.kind == "llama_cpp_python":
        return 0.0
    return _vllm_metric(server, "vllm:generation_tokens_total")
