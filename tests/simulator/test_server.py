"""The simulated GPU node, driven over HTTP as real processes (no Django needed)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest

from simulator.engine import PREFIX_BLOCK_TOKENS, chat_prefix_text, prefix_block_hashes
from tests.simulators import REPO_ROOT, SimProcess, start_simulator

pytestmark = pytest.mark.slow  # real servers and processes

OLLAMA_ARGS = (
    "--api", "ollama", "--model", "qwen3:32b", "--model", "nomic-embed-text",
    "--decode-ms", "1", "--prefill-ms", "0.001", "--cold-load-ms", "300",
    "--context-length", "8192", "--default-num-ctx", "2048", "--answer-tokens", "12",
)  # fmt: skip
VLLM_ARGS = (
    "--api", "openai", "--model", "Qwen/Qwen3-32B", "--context-length", "1024",
    "--decode-ms", "1", "--prefill-ms", "0.001", "--answer-tokens", "8",
)  # fmt: skip
# One slot, one waiting place, 20 ms per token on an A10: slow enough to fill the queue.
NARROW_ARGS = (
    "--api", "ollama", "--model", "qwen3:32b", "--parallel", "1", "--max-queue", "1",
    "--gpu-type", "A10", "--decode-ms", "20", "--cold-load-ms", "0", "--preloaded",
    "--answer-tokens", "200",
)  # fmt: skip
BUSY = "server busy, please try again.  maximum pending requests exceeded"
USER = [{"role": "user", "content": "Hello there"}]
METRIC_FIELDS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


@pytest.fixture(scope="module")
def ollama_proc() -> Iterator[SimProcess]:
    with start_simulator(*OLLAMA_ARGS) as sim:
        yield sim


@pytest.fixture
def ollama(ollama_proc: SimProcess) -> Iterator[SimProcess]:
    yield ollama_proc
    ollama_proc.control(reset=True)


@pytest.fixture(scope="module")
def vllm_proc() -> Iterator[SimProcess]:
    with start_simulator(*VLLM_ARGS) as sim:
        yield sim


@pytest.fixture
def vllm(vllm_proc: SimProcess) -> Iterator[SimProcess]:
    yield vllm_proc
    vllm_proc.control(reset=True)


@pytest.fixture(scope="module")
def narrow() -> Iterator[SimProcess]:
    with start_simulator(*NARROW_ARGS) as sim:
        yield sim


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll until ``condition`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def chat(sim: SimProcess, **body: Any) -> httpx.Response:
    payload = {"model": "qwen3:32b", "messages": USER, **body}
    return httpx.post(f"{sim.url}/api/chat", json=payload, timeout=10)


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in response.text.splitlines() if line]


def sse(response: httpx.Response) -> list[Any]:
    events: list[Any] = []
    for block in response.text.split("\n\n"):
        if block:
            assert block.startswith("data: ")
            data = block.removeprefix("data: ")
            events.append(data if data == "[DONE]" else orjson.loads(data))
    return events


# --- start-up and plain endpoints ---------------------------------------------------


def test_banner_says_it_is_simulated(ollama: SimProcess) -> None:
    assert re.fullmatch(
        r"Clawdbot simulated GPU node \(not a real GPU\) listening on http://127\.0\.0\.1:\d+ "
        r"api=ollama gpu=A100 models=qwen3:32b,nomic-embed-text:latest "
        r"control=http://127\.0\.0\.1:\d+",
        ollama.banner,
    )
    assert ollama.url == f"http://127.0.0.1:{ollama.port}"


def test_imports_nothing_from_django_or_the_project() -> None:
    """Benchmarks run the simulator standalone, without Django or a database."""
    project = {"django", "clawdbot_site", "gateway", "nodes", "dashboard", "tests"}
    code = "import sys, simulator.cli; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert [name for name in loaded if name.split(".")[0] in project] == []


def test_root_head_version_and_simulated_header(ollama: SimProcess) -> None:
    root = httpx.get(ollama.url)
    assert (root.status_code, root.text) == (200, "Ollama is running")
    assert root.headers["X-Clawdbot-Simulated"] == "1"
    assert httpx.head(ollama.url).status_code == 200
    version = httpx.get(f"{ollama.url}/api/version").json()["version"]
    assert re.fullmatch(r"0\.\d+\.\d+-simulated", version)
    missing = httpx.get(f"{ollama.url}/health")
    assert missing.status_code == 404 and missing.headers["X-Clawdbot-Simulated"] == "1"


def test_tags_lists_models_with_details(ollama: SimProcess) -> None:
    models = httpx.get(f"{ollama.url}/api/tags").json()["models"]
    assert [m["name"] for m in models] == ["qwen3:32b", "nomic-embed-text:latest"]
    qwen = models[0]
    assert qwen["model"] == "qwen3:32b" and qwen["size"] > 0 and len(qwen["digest"]) == 64
    assert qwen["modified_at"].endswith("Z")
    assert set(qwen["details"]) == {
        "parent_model",
        "format",
        "family",
        "families",
        "parameter_size",
        "quantization_level",
    }


def test_show_reports_the_trained_context_length(ollama: SimProcess) -> None:
    show = httpx.post(f"{ollama.url}/api/show", json={"model": "qwen3:32b"}).json()
    arch = show["model_info"]["general.architecture"]
    assert show["model_info"][f"{arch}.context_length"] == 8192
    assert isinstance(show["parameters"], str) and "tools" in show["capabilities"]
    by_name = httpx.post(f"{ollama.url}/api/show", json={"name": "nomic-embed-text"})
    assert by_name.json()["capabilities"] == ["embedding"]
    missing = httpx.post(f"{ollama.url}/api/show", json={"model": "nope"})
    assert (missing.status_code, missing.json()) == (404, {"error": "model 'nope' not found"})


# --- chat and generate --------------------------------------------------------------


def test_chat_streams_ndjson_by_default(ollama: SimProcess) -> None:
    response = chat(ollama)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    chunks = ndjson(response)
    *parts, final = chunks
    assert len(parts) == 12 and all(c["done"] is False for c in parts)
    assert all(c["message"]["role"] == "assistant" and c["created_at"] for c in parts)
    assert final["done"] is True and final["done_reason"] == "stop"
    for name in METRIC_FIELDS:
        assert isinstance(final[name], int) and final[name] >= 0, name
    assert final["eval_count"] == 12
    assert final["prompt_eval_count"] == 4 + 3  # overhead + ceil(11 / 4)


def test_chat_non_stream_and_determinism(ollama: SimProcess) -> None:
    first = chat(ollama, stream=False, options={"seed": 7})
    assert first.headers["content-type"].startswith("application/json")
    body = first.json()
    assert body["done"] is True and body["message"]["role"] == "assistant"
    assert body["message"]["content"] and all(isinstance(body[f], int) for f in METRIC_FIELDS)
    again = chat(ollama, stream=False, options={"seed": 7}).json()
    other = chat(ollama, stream=False, options={"seed": 8}).json()
    assert again["message"]["content"] == body["message"]["content"]
    assert other["message"]["content"] != body["message"]["content"]


def test_num_predict_stop_and_json_format(ollama: SimProcess) -> None:
    short = chat(ollama, stream=False, options={"num_predict": 3}).json()
    assert (short["eval_count"], short["done_reason"]) == (3, "length")
    full = chat(ollama, stream=False).json()["message"]["content"]
    word = full.split()[2]
    stopped = chat(ollama, stream=False, options={"stop": [word]}).json()
    assert stopped["done_reason"] == "stop" and word not in stopped["message"]["content"]
    as_json = chat(ollama, stream=False, format="json").json()
    assert "answer" in orjson.loads(as_json["message"]["content"])


def test_think_emits_thinking_before_content(ollama: SimProcess) -> None:
    chunks = ndjson(chat(ollama, think=True))
    kinds = ["thinking" if c["message"].get("thinking") else "content" for c in chunks[:-1]]
    assert kinds[0] == "thinking" and kinds[-1] == "content"
    assert kinds == sorted(kinds, key=lambda k: k != "thinking")


def test_tools_answer_with_one_whole_tool_call_then_text(ollama: SimProcess) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "required": ["city", "days"],
                    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                },
            },
        }
    ]
    chunks = ndjson(chat(ollama, tools=tools))
    calls = [c["message"]["tool_calls"] for c in chunks if c["message"].get("tool_calls")]
    assert len(calls) == 1 and len(calls[0]) == 1
    call = calls[0][0]
    assert call["id"].startswith("call_")
    assert call["function"] == {
        "index": 0,
        "name": "get_weather",
        "arguments": {"city": "example", "days": 1},
    }
    assert chunks[-1]["done_reason"] == "stop"
    history = [
        *USER,
        {"role": "assistant", "content": "", "tool_calls": [{"function": call["function"]}]},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    after = chat(ollama, stream=False, tools=tools, messages=history).json()
    assert after["message"]["content"] and "tool_calls" not in after["message"]


def test_generate_streams_response_and_context(ollama: SimProcess) -> None:
    response = httpx.post(
        f"{ollama.url}/api/generate", json={"model": "qwen3:32b", "prompt": "Why?"}, timeout=10
    )
    *parts, final = ndjson(response)
    assert "".join(p["response"] for p in parts)
    assert final["done"] is True and isinstance(final["context"], list)
    assert all(isinstance(final[name], int) for name in METRIC_FIELDS)


def test_preload_unload_and_cold_load(ollama: SimProcess) -> None:
    unload = chat(ollama, messages=[], keep_alive=0).json()
    assert (unload["done"], unload["done_reason"]) == (True, "unload")
    assert httpx.get(f"{ollama.url}/api/ps").json()["models"] == []

    load = chat(ollama, messages=[], keep_alive="10m", options={"num_ctx": 4096}).json()
    assert (load["done"], load["done_reason"]) == (True, "load")
    (loaded,) = httpx.get(f"{ollama.url}/api/ps").json()["models"]
    assert loaded["name"] == "qwen3:32b" and loaded["context_length"] == 4096
    assert loaded["size_vram"] == loaded["size"] and loaded["expires_at"]

    warm = chat(ollama, stream=False, options={"num_ctx": 4096}).json()
    assert warm["load_duration"] < 100_000_000
    # A different num_ctx reloads the runner, which costs the cold load (300 ms) again.
    reload = chat(ollama, stream=False).json()
    assert reload["load_duration"] >= 250_000_000
    assert httpx.get(f"{ollama.url}/api/ps").json()["models"][0]["context_length"] == 2048

    generate_unload = httpx.post(
        f"{ollama.url}/api/generate", json={"model": "qwen3:32b", "keep_alive": 0}
    ).json()
    assert generate_unload["done_reason"] == "unload"
    cold = chat(ollama).text.splitlines()[-1]
    assert orjson.loads(cold)["load_duration"] >= 250_000_000


def test_keep_alive_zero_unloads_after_the_request(ollama: SimProcess) -> None:
    assert chat(ollama, stream=False, keep_alive=0).status_code == 200
    assert httpx.get(f"{ollama.url}/api/ps").json()["models"] == []
    chat(ollama, stream=False, keep_alive=-1)
    (forever,) = httpx.get(f"{ollama.url}/api/ps").json()["models"]
    assert forever["expires_at"] > "2200"


def test_long_prompt_is_truncated_silently(ollama: SimProcess) -> None:
    messages = [{"role": "user", "content": "x" * 8000}]  # 2004 tokens
    body = chat(ollama, stream=False, messages=messages, options={"num_ctx": 1024}).json()
    # keep 4 + block (1024 - 4) // 2 = 510; one block per overflow is dropped.
    assert body["done"] is True and body["prompt_eval_count"] == 2004 - 2 * 510
    (loaded,) = httpx.get(f"{ollama.url}/api/ps").json()["models"]
    assert loaded["context_length"] == 1024
    for flag in ("truncate", "shift"):
        strict = {flag: False}
        refused = chat(ollama, stream=False, messages=messages, options={"num_ctx": 1024}, **strict)
        assert refused.status_code == 400
        assert refused.json()["error"].startswith(
            "the prompt is longer than the context length currently available to the model"
        )
    fits = chat(ollama, stream=False, truncate=False, shift=False)
    assert fits.status_code == 200


def test_num_ctx_is_capped_at_the_trained_length(ollama: SimProcess) -> None:
    chat(ollama, stream=False, options={"num_ctx": 100_000})
    (loaded,) = httpx.get(f"{ollama.url}/api/ps").json()["models"]
    assert loaded["context_length"] == 8192


def test_embed_returns_unit_vectors(ollama: SimProcess) -> None:
    body = httpx.post(
        f"{ollama.url}/api/embed", json={"model": "nomic-embed-text", "input": ["a", "b"]}
    ).json()
    assert body["model"] == "nomic-embed-text" and len(body["embeddings"]) == 2
    assert all(len(v) == 384 for v in body["embeddings"])
    assert sum(x * x for x in body["embeddings"][0]) == pytest.approx(1.0)
    assert body["prompt_eval_count"] == 2
    assert isinstance(body["total_duration"], int) and isinstance(body["load_duration"], int)
    single = httpx.post(f"{ollama.url}/api/embed", json={"model": "qwen3:32b", "input": "a"})
    assert single.json()["embeddings"][0] == body["embeddings"][0]


def test_ollama_error_bodies(ollama: SimProcess) -> None:
    bad_json = httpx.post(f"{ollama.url}/api/chat", content=b"{nope")
    assert bad_json.status_code == 400 and isinstance(bad_json.json()["error"], str)
    no_model = httpx.post(f"{ollama.url}/api/chat", json={"messages": USER})
    assert (no_model.status_code, no_model.json()) == (400, {"error": "model is required"})
    unknown = chat(ollama, model="mistral")
    assert (unknown.status_code, unknown.json()) == (404, {"error": "model 'mistral' not found"})
    bad_keep_alive = chat(ollama, keep_alive="300")
    assert bad_keep_alive.status_code == 400 and "missing unit" in bad_keep_alive.json()["error"]


# --- faults -------------------------------------------------------------------------


def test_mid_stream_error_line_then_close_without_done(ollama: SimProcess) -> None:
    assert ollama.control(drop_mid_stream_after=3)["faults"]["drop_mid_stream_after"] == 3
    response = chat(ollama)
    assert response.status_code == 200
    chunks = ndjson(response)
    assert [c.get("done") for c in chunks] == [False, False, False, None]
    assert isinstance(chunks[-1]["error"], str)

    ollama.control(drop_mode="abrupt")
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "POST", f"{ollama.url}/api/chat", json={"model": "qwen3:32b", "messages": USER}
        ) as stream,
    ):
        lines = []
        for line in stream.iter_lines():
            lines.append(line)
    assert len(lines) == 3


def test_error_rate_answers_before_any_byte(ollama: SimProcess) -> None:
    ollama.control(error_rate=1.0)
    failed = chat(ollama)
    assert failed.status_code == 500 and isinstance(failed.json()["error"], str)
    ollama.control(error_status=503)
    assert chat(ollama).status_code == 503
    assert httpx.get(ollama.url).status_code == 200  # only inference requests fail
    assert ollama.stats()["injected_errors"] >= 2


def test_hang_holds_requests_until_cleared(ollama: SimProcess) -> None:
    ollama.control(hang=True)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{ollama.url}/api/tags", timeout=0.3)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(chat, ollama, stream=False)
        wait_for(lambda: ollama.stats()["in_flight"] >= 1)
        assert not pending.done()
        ollama.control(hang=False)
        assert pending.result(timeout=10).status_code == 200
    wait_for(lambda: ollama.stats()["in_flight"] == 0)


def test_refuse_connections_really_refuses(ollama: SimProcess) -> None:
    view = ollama.control(refuse_connections=True)
    assert view["listening"] is False
    with pytest.raises(httpx.ConnectError):
        httpx.get(ollama.url)
    assert ollama.stats()["api"] == "ollama"  # the control port still answers
    ollama.control(refuse_connections=False)
    assert httpx.get(ollama.url).status_code == 200


def test_control_validates_and_reports(ollama: SimProcess) -> None:
    for bad in ({"error_rate": 2}, {"drop_mode": "explode"}, {"bogus": True}):
        response = httpx.post(f"{ollama.control_url}/_sim/control", json=bad)
        assert response.status_code == 400 and response.json()["error"]
    view = httpx.get(f"{ollama.url}/_sim/control").json()
    assert view["faults"]["error_rate"] == 0.0 and view["config"]["parallel"] == 4
    assert view["config"]["models"] == ["qwen3:32b", "nomic-embed-text:latest"]


def test_requests_are_recorded(ollama: SimProcess) -> None:
    ollama.clear_requests()
    chat(ollama, stream=False, keep_alive="5m", options={"num_ctx": 4096})
    (recorded,) = ollama.requests()
    assert (recorded["method"], recorded["path"]) == ("POST", "/api/chat")
    assert recorded["body"]["options"] == {"num_ctx": 4096}
    assert recorded["body"]["keep_alive"] == "5m" and recorded["body"]["stream"] is False
    assert recorded["headers"]["content-type"] == "application/json"
    httpx.get(ollama.url)
    assert [r["path"] for r in ollama.requests(limit=1)] == ["/"]
    assert httpx.get(f"{ollama.url}/_sim/requests?limit=-1").status_code == 400


def test_queue_limit_answers_503(narrow: SimProcess) -> None:
    slow = {"stream": False, "options": {"num_predict": 25}}  # about 0.5 s each
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(chat, narrow, **slow)
        wait_for(lambda: narrow.stats()["running"] == 1)
        second = pool.submit(chat, narrow, **slow)
        wait_for(lambda: narrow.stats()["queued"] == 1)
        third = chat(narrow, **slow)
        assert (third.status_code, third.json()) == (503, {"error": BUSY})
        assert first.result(10).status_code == second.result(10).status_code == 200
    stats = narrow.stats()
    assert stats["max_running_seen"] == 1 and stats["max_queued_seen"] == 1


def test_client_disconnect_frees_the_slot(narrow: SimProcess) -> None:
    # 200 tokens at 20 ms would hold the only slot for 4 s if nobody noticed the client left.
    started = time.monotonic()
    with httpx.Client(timeout=10) as client:
        payload = {"model": "qwen3:32b", "messages": USER}
        with client.stream("POST", f"{narrow.url}/api/chat", json=payload) as stream:
            first = next(stream.iter_lines())
            assert orjson.loads(first)["done"] is False
    wait_for(lambda: narrow.stats()["in_flight"] == 0 and narrow.stats()["running"] == 0)
    quick = chat(narrow, stream=False, options={"num_predict": 2})
    assert quick.status_code == 200
    assert time.monotonic() - started < 3


def test_zero_latency_pays_no_delays() -> None:
    with start_simulator("--zero-latency", "--cold-load-ms", "5000", "--decode-ms", "1000") as sim:
        started = time.monotonic()
        body = chat(sim, stream=False).json()
        assert time.monotonic() - started < 1
        assert body["done"] is True and body["load_duration"] < 50_000_000
        # No prefill to save, so no cache work on the hot-path benchmark's reference either.
        cache = sim.stats()["prefix_cache"]
        assert cache["capacity_tokens"] == 0 and cache["queries"] == 0


# --- vLLM / OpenAI-compatible kind ----------------------------------------------------


def test_vllm_health_and_engine_dead(vllm: SimProcess) -> None:
    health = httpx.get(f"{vllm.url}/health")
    assert (health.status_code, health.content) == (200, b"")
    assert httpx.get(f"{vllm.url}/api/tags").status_code == 404
    vllm.control(engine_dead=True)
    assert httpx.get(f"{vllm.url}/health").status_code == 503
    failed = httpx.post(
        f"{vllm.url}/v1/chat/completions", json={"model": "Qwen/Qwen3-32B", "messages": USER}
    )
    assert failed.status_code == 500
    assert failed.json()["error"]["type"] == "InternalServerError"
    assert failed.json()["error"]["code"] == 500


def test_vllm_models_report_max_model_len(vllm: SimProcess) -> None:
    body = httpx.get(f"{vllm.url}/v1/models").json()
    assert body["object"] == "list"
    (model,) = body["data"]
    assert model["id"] == "Qwen/Qwen3-32B" and model["object"] == "model"
    assert model["owned_by"] == "vllm" and model["parent"] is None and model["root"]
    assert model["max_model_len"] == 1024 and isinstance(model["created"], int)
    assert isinstance(model["permission"], list)


def openai_chat(sim: SimProcess, **body: Any) -> httpx.Response:
    payload = {"model": "Qwen/Qwen3-32B", "messages": USER, **body}
    return httpx.post(f"{sim.url}/v1/chat/completions", json=payload, timeout=10)


def test_vllm_chat_non_stream(vllm: SimProcess) -> None:
    body = openai_chat(vllm, max_tokens=3).json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["completion_tokens"] == 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_vllm_chat_stream_sequence(vllm: SimProcess) -> None:
    response = openai_chat(vllm, stream=True)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse(response)
    assert events[-1] == "[DONE]"
    first, *middle, finish = events[:-1]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all("content" in e["choices"][0]["delta"] for e in middle) and len(middle) == 8
    assert finish["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert len({e["id"] for e in events[:-1]}) == 1
    assert all("usage" not in e for e in events[:-1])


def test_vllm_include_usage_defaults_on_with_stream_options(vllm: SimProcess) -> None:
    events = sse(openai_chat(vllm, stream=True, stream_options={}))
    *chunks, usage, done = events
    assert done == "[DONE]" and usage["choices"] == [] and usage["usage"]["completion_tokens"] == 8
    assert all(c["usage"] is None for c in chunks)
    off = sse(openai_chat(vllm, stream=True, stream_options={"include_usage": False}))
    assert all(e == "[DONE]" or e["choices"] for e in off)


def test_vllm_context_overflow_and_unknown_model(vllm: SimProcess) -> None:
    long = [{"role": "user", "content": "x" * 4000}]  # 1004 tokens
    overflow = openai_chat(vllm, messages=long, max_tokens=100)
    assert overflow.status_code == 400
    assert overflow.json() == {
        "error": {
            "message": "This model's maximum context length is 1024 tokens. However, you "
            "requested 1104 tokens (1004 in the messages, 100 in the completion). Please "
            "reduce the length of the messages or completion.",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    }
    unknown = openai_chat(vllm, model="nope")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "The model `nope` does not exist."
    assert unknown.json()["error"]["type"] == "NotFoundError"
    assert unknown.json()["error"]["code"] == 404


def test_vllm_tool_calls_and_reasoning(vllm: SimProcess) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "required": ["q"], "properties": {"q": {}}},
            },
        }
    ]
    events = sse(openai_chat(vllm, stream=True, tools=tools, reasoning_effort="low"))[:-1]
    deltas = [e["choices"][0]["delta"] for e in events]
    reasoning = [d for d in deltas if "reasoning_content" in d]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert reasoning and calls[0]["id"] and calls[0]["function"]["name"] == "lookup"
    arguments = "".join(c["function"]["arguments"] for c in calls)
    assert orjson.loads(arguments) == {"q": "example"}
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
    plain = openai_chat(vllm, tools=tools).json()["choices"][0]
    assert plain["finish_reason"] == "tool_calls"
    assert orjson.loads(plain["message"]["tool_calls"][0]["function"]["arguments"]) == {
        "q": "example"
    }


def test_vllm_mid_stream_error_then_done(vllm: SimProcess) -> None:
    vllm.control(drop_mid_stream_after=2)
    events = sse(openai_chat(vllm, stream=True))
    assert events[-1] == "[DONE]"
    error = events[-2]["error"]
    assert error["type"] == "InternalServerError" and error["code"] == 500
    assert len(events) == 1 + 2 + 2  # role chunk, two tokens, error, [DONE]


def test_vllm_completions_embeddings_and_metrics(vllm: SimProcess) -> None:
    completion = httpx.post(
        f"{vllm.url}/v1/completions", json={"model": "Qwen/Qwen3-32B", "prompt": "Once"}
    ).json()
    assert completion["object"] == "text_completion" and completion["choices"][0]["text"]
    embeddings = httpx.post(
        f"{vllm.url}/v1/embeddings", json={"model": "Qwen/Qwen3-32B", "input": ["a", "b"]}
    ).json()
    assert [d["index"] for d in embeddings["data"]] == [0, 1]
    assert embeddings["usage"] == {"prompt_tokens": 2, "total_tokens": 2, "completion_tokens": 0}
    metrics = httpx.get(f"{vllm.url}/metrics").text
    assert 'vllm:num_requests_running{model_name="Qwen/Qwen3-32B"} 0.0' in metrics
    assert 'vllm:num_requests_waiting{model_name="Qwen/Qwen3-32B"} 0.0' in metrics


# --- prefix cache ---------------------------------------------------------------------------

LONG_QUESTION = "Why does this function leak file handles when the parser fails? " * 90


def test_vllm_reports_cached_prompt_tokens_of_a_follow_up_turn(vllm: SimProcess) -> None:
    first_turn = [{"role": "user", "content": LONG_QUESTION[:2400]}]
    first = openai_chat(vllm, messages=first_turn).json()
    assert first["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    answer = first["choices"][0]["message"]["content"]
    history = [*first_turn, {"role": "assistant", "content": answer}]
    follow_up = openai_chat(vllm, messages=[*history, {"role": "user", "content": "And now?"}])
    usage = follow_up.json()["usage"]
    # The whole first turn, its answer included, minus at most one partial block of each.
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    assert first["usage"]["prompt_tokens"] - 16 <= cached < usage["prompt_tokens"]
    stats = vllm.stats()["prefix_cache"]
    assert stats["hits"] >= 1 and stats["hit_tokens"] >= cached
    metrics = httpx.get(f"{vllm.url}/metrics").text
    label = '{model_name="Qwen/Qwen3-32B"}'
    assert f"vllm:prefix_cache_hits_total{label} {float(stats['hit_tokens'])}" in metrics
    assert f"vllm:prefix_cache_queries_total{label} {float(stats['query_tokens'])}" in metrics
    # Another conversation shares nothing with it.
    other = openai_chat(vllm, messages=[{"role": "user", "content": "x" * 2400}]).json()
    assert other["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}


def test_ollama_prefill_pays_only_the_uncached_part() -> None:
    args = (
        "--api", "ollama", "--model", "qwen3:32b", "--gpu-type", "A10", "--preloaded",
        "--prefill-ms", "0.5", "--decode-ms", "1", "--answer-tokens", "6",
        "--default-num-ctx", "8192", "--prefix-cache-tokens", "4096",
    )  # fmt: skip
    with start_simulator(*args) as sim:
        first_turn = [{"role": "user", "content": LONG_QUESTION}]  # about 1,500 tokens
        first = chat(sim, messages=first_turn, stream=False).json()
        history = [*first_turn, first["message"]]
        second = chat(sim, messages=[*history, {"role": "user", "content": "Why?"}], stream=False)
        again = second.json()
        # Prefill of about 1,500 tokens on an A10 (0.75 s) against a few dozen (~20 ms).
        assert first["prompt_eval_duration"] > 0.5e9
        assert again["prompt_eval_duration"] < first["prompt_eval_duration"] / 5
        assert again["prompt_eval_count"] > first["prompt_eval_count"]
        stats = sim.stats()["prefix_cache"]
        assert stats["queries"] == 2 and stats["hits"] == 1
        assert stats["query_tokens"] == first["prompt_eval_count"] + again["prompt_eval_count"]
        assert stats["capacity_tokens"] == 4096 and 0 < stats["used_tokens"] <= 4096
        # The same first turn again: a deterministic answer and a cache hit.
        repeat = chat(sim, messages=first_turn, stream=False).json()
        assert repeat["message"]["content"] == first["message"]["content"]
        assert repeat["prompt_eval_duration"] < first["prompt_eval_duration"] / 5


def test_speed_set_at_runtime_slows_decoding(narrow: SimProcess) -> None:
    """What the routing benchmark does to a node mid-run: halve its speed on the control
    port; reset gives the start-up speed back."""
    before = chat(narrow, stream=False, options={"num_predict": 10}).json()["eval_duration"]
    assert narrow.control(speed=0.5)["faults"]["speed"] == 0.5
    slowed = chat(narrow, stream=False, options={"num_predict": 10}).json()["eval_duration"]
    assert narrow.control(reset=True)["faults"]["speed"] == 1.0
    # 10 tokens at 20 ms (A10) against 40 ms each: a factor of 2, with room for scheduling.
    assert slowed > 1.6 * before


@pytest.mark.parametrize("api", ["ollama", "openai"])
def test_a_streamed_answer_is_cached_for_the_next_turn(api: str) -> None:
    args = (
        "--api", api, "--model", "qwen3:32b", "--preloaded", "--decode-ms", "0.1",
        "--prefill-ms", "0.001", "--answer-tokens", "40", "--default-num-ctx", "8192",
    )  # fmt: skip
    path = "/api/chat" if api == "ollama" else "/v1/chat/completions"
    with start_simulator(*args) as sim:
        history = [{"role": "user", "content": LONG_QUESTION[:3000]}]
        streamed = httpx.post(
            sim.url + path, json={"model": "qwen3:32b", "messages": history, "stream": True}
        )
        if api == "ollama":
            answer = "".join(c["message"]["content"] for c in ndjson(streamed))
        else:
            events = [e for e in sse(streamed) if e != "[DONE]"]
            answer = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
        assert len(answer) > 150  # a few blocks of answer
        history += [
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "Why?"},
        ]
        before = sim.stats()["prefix_cache"]["hit_tokens"]
        body = {"model": "qwen3:32b", "messages": history, "stream": False}
        httpx.post(sim.url + path, json=body).raise_for_status()
        hit = sim.stats()["prefix_cache"]["hit_tokens"] - before
        # Every whole block of the first prompt and its answer: the answer's blocks were kept.
        kept = chat_prefix_text(history[:2])
        assert hit == PREFIX_BLOCK_TOKENS * len(prefix_block_hashes(kept))
        assert hit > PREFIX_BLOCK_TOKENS * len(prefix_block_hashes(chat_prefix_text(history[:1])))
