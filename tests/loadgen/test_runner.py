"""The load runner against a real simulated vLLM node (its OpenAI-compatible /v1 straight,
no gateway): counts, durations, streams, and each kind of failure in its bucket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from loadgen.runner import ModelNotOffered, Progress, Unreachable, run_load, run_load_sync
from tests.gateways import free_port
from tests.simulators import SimProcess, start_simulator

pytestmark = pytest.mark.slow  # a simulator process

MODEL = "qwen3-32b"


@pytest.fixture(scope="module")
def node() -> Iterator[SimProcess]:
    with start_simulator("--api", "openai", "--model", MODEL, "--speed", "10") as sim:
        yield sim


@pytest.fixture
def sim(node: SimProcess) -> Iterator[SimProcess]:
    node.control(reset=True)
    node.clear_requests()
    yield node
    node.control(reset=True)


def chat_requests(sim: SimProcess) -> int:
    """Chat completions the node received in this test (the fixture clears its record)."""
    return sum(r["path"] == "/v1/chat/completions" for r in sim.requests())


def test_exactly_the_requests_asked_for_spread_over_the_clients(sim: SimProcess) -> None:
    seen: list[Progress] = []
    summary = run_load_sync(
        sim.url, "k", MODEL, concurrency=3, requests=7, max_tokens=4, on_progress=seen.append
    )
    assert (summary.requests, summary.ok, summary.statuses) == (7, 7, {"200": 7})
    assert chat_requests(sim) == 7
    assert summary.completion_tokens == 28, "usage read from each answer"
    assert summary.latency is not None and summary.latency.p50 > 0
    assert summary.ttft is None and not summary.stream
    assert seen[-1].done == 7 and seen[-1].total == 7 and seen[-1].in_flight == 0
    body = sim.requests()[-1]["body"]
    assert body["model"] == MODEL and body["max_tokens"] == 4 and "stream" not in body


def test_fewer_requests_than_clients(sim: SimProcess) -> None:
    summary = run_load_sync(sim.url + "/v1/", "k", MODEL, concurrency=10, requests=2)
    assert summary.requests == 2 and chat_requests(sim) == 2


async def test_for_a_duration(sim: SimProcess) -> None:
    summary = await run_load(sim.url, "k", MODEL, concurrency=2, duration_s=1.0)
    assert summary.requests > 4 and summary.ok == summary.requests
    assert 1.0 <= summary.duration_s < 3.0
    assert summary.requests_per_s == pytest.approx(summary.requests / summary.duration_s)


def test_streams_measure_time_to_first_token_and_tokens(sim: SimProcess) -> None:
    summary = run_load_sync(
        sim.url, "k", MODEL, concurrency=2, requests=6, stream=True, max_tokens=5
    )
    assert summary.ok == 6 and summary.stream
    assert summary.ttft is not None and summary.latency is not None
    assert 0 < summary.ttft.p50 < summary.latency.p50
    assert summary.completion_tokens == 30, "from the include_usage chunk"
    body = sim.requests()[-1]["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_error_statuses_counted_with_their_messages(sim: SimProcess) -> None:
    sim.control(error_rate=1.0, error_status=503)
    summary = run_load_sync(sim.url, "k", MODEL, concurrency=2, requests=5)
    assert summary.statuses == {"503": 5} and summary.ok == 0 and summary.error_rate == 1
    assert summary.samples == {"503": ["simulated failure (error_rate)"]}
    assert summary.latency is None


def test_a_stream_cut_with_an_error_event(sim: SimProcess) -> None:
    sim.control(drop_mid_stream_after=2, drop_mode="error")
    summary = run_load_sync(sim.url, "k", MODEL, concurrency=2, requests=3, stream=True)
    assert summary.statuses == {"stream_error": 3}
    assert summary.samples["stream_error"][0]


def test_a_stream_cut_by_a_closed_connection(sim: SimProcess) -> None:
    sim.control(drop_mid_stream_after=2, drop_mode="abrupt")
    summary = run_load_sync(sim.url, "k", MODEL, concurrency=1, requests=2, stream=True)
    assert summary.statuses == {"protocol_error": 2}


def test_a_request_over_its_time_is_a_timeout(sim: SimProcess) -> None:
    sim.control(speed=0.01)
    summary = run_load_sync(sim.url, "k", MODEL, concurrency=2, requests=2, timeout_s=0.3)
    assert summary.statuses == {"timeout": 2}
    assert summary.samples == {"timeout": ["no complete answer within 0.3 s"]}


def test_a_model_the_server_does_not_offer(sim: SimProcess) -> None:
    with pytest.raises(ModelNotOffered, match=r"no model 'nope' .*\(it offers: qwen3-32b\)"):
        run_load_sync(sim.url, "k", "nope", concurrency=1, requests=1)
    assert chat_requests(sim) == 0


def test_nothing_listening() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unreachable, match=f"cannot connect to {url}/v1"):
        run_load_sync(url, "k", MODEL, concurrency=1, requests=1)


@pytest.mark.parametrize(
    "amount", [{}, {"requests": 5, "duration_s": 1.0}, {"requests": 0}, {"duration_s": -1.0}]
)
def test_a_count_or_a_duration(amount: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        run_load_sync("http://127.0.0.1:9", "k", MODEL, concurrency=1, **amount)  # type: ignore[arg-type]
