"""vLLM's OpenAI-compatible API: ``/health``, ``/version``, ``/v1/models``, ``/metrics``,
``/v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings``."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from simulator.engine import (
    AnswerPlan,
    AnswerRequest,
    chat_prefix_text,
    chat_seed_text,
    embedding_vector,
    estimate_chat_tokens,
    estimate_text_tokens,
    plan_answer,
    seed_for,
    vllm_context_error,
)
from simulator.replies import (
    BUSY_MESSAGE,
    INJECTED_ERROR,
    MID_STREAM_ERROR,
    SSE_DONE,
    drop,
    json_response,
    maybe_drop,
    request_body,
    sse_event,
    stop_sequences,
)
from simulator.state import STATE, Generation, QueueFull, SimState, prefill_only

VLLM_VERSION = "0.10.1-simulated"
VLLM_ENGINE_DEAD = "EngineCore encountered an issue. See stack trace (above) for the root cause."
SSE = "text/event-stream"


def _openai_error_body(status: int, message: str) -> dict[str, Any]:
    if status == 404:
        kind = "NotFoundError"
    elif status < 500:
        kind = "BadRequestError"
    else:
        kind = "InternalServerError"
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


def _openai_error(status: int, message: str) -> web.Response:
    return json_response(_openai_error_body(status, message), status)


# Qwen's tokenizer: a logit_bias key at or past it is refused.
VOCAB_SIZE = 151_936


def _out_of_vocab(bias: object) -> list[int]:
    if not isinstance(bias, dict):
        return []
    ids = [int(k) for k in bias if isinstance(k, str) and k.lstrip("-").isdigit()]
    return [i for i in ids if i < 0 or i >= VOCAB_SIZE]


def _streamed_error(status: int, message: str) -> web.Response:
    """vLLM validates some parameters (logit_bias among them) only once a stream's generator
    runs: the status is 200 and the first event is the error, then [DONE]."""
    body = sse_event(_openai_error_body(status, message)) + SSE_DONE
    return web.Response(body=body, status=200, content_type=SSE)


def _vllm_drop_tail() -> bytes:
    # vLLM's create_streaming_error_response, then [DONE].
    return sse_event(_openai_error_body(500, MID_STREAM_ERROR)) + SSE_DONE


async def vllm_health(request: web.Request) -> web.Response:
    if request.app[STATE].faults.engine_dead:
        return web.Response(status=503)
    return web.Response(status=200)


async def vllm_version(request: web.Request) -> web.Response:
    return json_response({"version": VLLM_VERSION})


async def vllm_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    created = state.started_unix
    data = [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": name,
            "parent": None,
            "max_model_len": state.config.context_length,
            "permission": [
                {
                    "id": f"modelperm-{card.digest[:32]}",
                    "object": "model_permission",
                    "created": created,
                    "allow_create_engine": False,
                    "allow_sampling": True,
                    "allow_logprobs": True,
                    "allow_search_indices": False,
                    "allow_view": True,
                    "allow_fine_tuning": False,
                    "organization": "*",
                    "group": None,
                    "is_blocking": False,
                }
            ],
        }
        for name, card in state.cards.items()
    ]
    return json_response({"object": "list", "data": data})


async def vllm_metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    lines: list[str] = []
    gauges = (
        (
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            state.running_by_model,
        ),
        (
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            state.waiting_by_model,
        ),
    )
    for metric, help_text, values in gauges:
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} gauge")
        lines.extend(
            f'{metric}{{model_name="{name}"}} {float(values[name])}' for name in state.cards
        )
    usage = state.kv_usage()
    lines.append("# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.")
    lines.append("# TYPE vllm:kv_cache_usage_perc gauge")
    lines.extend(f'vllm:kv_cache_usage_perc{{model_name="{name}"}} {usage}' for name in state.cards)
    counters = (
        (
            "vllm:prompt_tokens_total",
            "Number of prefill tokens processed.",
            state.prompt_tokens_total,
        ),
        (
            "vllm:generation_tokens_total",
            "Number of generation tokens processed.",
            state.generated_tokens_total,
        ),
        # vLLM v1's prefix-cache counters, both in tokens.
        (
            "vllm:prefix_cache_queries_total",
            "Prefix cache queries, in terms of number of queried tokens.",
            state.prefix_cache_query_tokens,
        ),
        (
            "vllm:prefix_cache_hits_total",
            "Prefix cache hits, in terms of number of cached tokens.",
            state.prefix_cache_hit_tokens,
        ),
    )
    for metric, help_text, total in counters:
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} counter")
        lines.extend(f'{metric}{{model_name="{name}"}} {float(total)}' for name in state.cards)
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")


@dataclass(slots=True)
class _OpenAIRequest:
    """The validated parts of an OpenAI-shaped generation request."""

    name: str
    prompt_tokens: int
    max_tokens: int | None
    stream: bool
    include_usage: bool
    # What the prefix cache cuts into blocks; None for requests it does not apply to.
    prefix_text: str | None = None
    cached_tokens: int = 0


def _openai_common(
    state: SimState, body: dict[str, Any], prompt_tokens: int, *, default_max: int | None
) -> _OpenAIRequest | web.Response:
    requested = body.get("model")
    if requested is None:
        name: str | None = state.config.models[0]
    else:
        name = requested if isinstance(requested, str) and requested in state.cards else None
    if name is None:
        return _openai_error(404, f"The model `{requested}` does not exist.")
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens", default_max)
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        return _openai_error(400, f"max_tokens must be at least 1, got {max_tokens}.")
    message = vllm_context_error(prompt_tokens, max_tokens, state.config.context_length)
    if message is not None:
        return _openai_error(400, message)
    stream = body.get("stream") is True
    bad = _out_of_vocab(body.get("logit_bias"))
    if bad:
        message = (
            f"token_id(s) {bad} in logit_bias contain out-of-vocab token ids. "
            f"Vocabulary size: {VOCAB_SIZE}"
        )
        return _streamed_error(400, message) if stream else _openai_error(400, message)
    stream_options = body.get("stream_options")
    # vLLM quirk: once stream_options is present, include_usage defaults to true.
    include_usage = (
        stream
        and isinstance(stream_options, dict)
        and bool(stream_options.get("include_usage", True))
    )
    if max_tokens is None:
        max_tokens = state.config.context_length - prompt_tokens
    return _OpenAIRequest(name, prompt_tokens, max_tokens, stream, include_usage)


def _openai_format(value: object) -> str | dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    if value.get("type") == "json_object":
        return "json"
    if value.get("type") == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return schema if isinstance(schema, dict) else "json"
    return None


def _openai_tool(body: dict[str, Any], messages: list[Any]) -> dict[str, Any] | None:
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    if last.get("role") != "user":
        return None
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        for tool in tools:
            if isinstance(tool, dict) and (tool.get("function") or {}).get("name") == wanted:
                return tool
    first = tools[0]
    return first if isinstance(first, dict) else None


def _usage(common: _OpenAIRequest, plan: AnswerPlan) -> dict[str, Any]:
    prompt_tokens = common.prompt_tokens
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + plan.eval_count,
        "completion_tokens": plan.eval_count,
    }
    if common.prefix_text is not None:
        # As vLLM with --enable-prompt-tokens-details: the prompt tokens its cache served.
        usage["prompt_tokens_details"] = {"cached_tokens": common.cached_tokens}
    if plan.thinking:
        usage["completion_tokens_details"] = {"reasoning_tokens": len(plan.thinking)}
    return usage


async def vllm_chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = request_body(request)
    if isinstance(body, str):
        return _openai_error(400, body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _openai_error(400, "messages must be a non-empty list")
    tools = body.get("tools")
    common = _openai_common(state, body, estimate_chat_tokens(messages, tools), default_max=None)
    if isinstance(common, web.Response):
        return common
    if state.prefix_cache.capacity_blocks > 0:
        common.prefix_text = chat_prefix_text(messages)
    effort = body.get("reasoning_effort")
    answer = AnswerRequest(
        seed=seed_for(body.get("seed"), chat_seed_text(messages)),
        max_tokens=common.max_tokens,
        stops=stop_sequences(body.get("stop")),
        response_format=_openai_format(body.get("response_format")),
        think=isinstance(effort, str) and effort != "none",
        tool=_openai_tool(body, messages),
    )
    return await _vllm_generate(request, state, common, answer, shape="chat")


async def vllm_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = request_body(request)
    if isinstance(body, str):
        return _openai_error(400, body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        prompt_tokens = estimate_text_tokens(prompt)
        seed_text = prompt
    elif isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
        prompt_tokens = len(prompt)
        seed_text = str(prompt)
    else:
        return _openai_error(400, "prompt must be a string or a list of token ids (one prompt)")
    # vLLM's CompletionRequest defaults max_tokens to 16, like OpenAI's.
    common = _openai_common(state, body, prompt_tokens, default_max=16)
    if isinstance(common, web.Response):
        return common
    if state.prefix_cache.capacity_blocks > 0:
        common.prefix_text = seed_text
    answer = AnswerRequest(
        seed=seed_for(body.get("seed"), seed_text),
        max_tokens=common.max_tokens,
        stops=stop_sequences(body.get("stop")),
        response_format=_openai_format(body.get("response_format")),
    )
    return await _vllm_generate(request, state, common, answer, shape="completion")


def _vllm_injected(state: SimState) -> web.Response | None:
    status = state.injected_status()
    if status is None:
        return None
    message = VLLM_ENGINE_DEAD if state.faults.engine_dead else INJECTED_ERROR
    return _openai_error(status, message)


async def _vllm_generate(
    request: web.Request,
    state: SimState,
    common: _OpenAIRequest,
    answer: AnswerRequest,
    *,
    shape: str,
) -> web.StreamResponse:
    injected = _vllm_injected(state)
    if injected is not None:
        return injected
    plan = plan_answer(answer, answer_tokens=state.config.answer_tokens)
    try:
        async with Generation(state, common.name, num_ctx=0, keep_alive_s=0) as generation:
            await generation.prefill(common.prompt_tokens, common.prefix_text)
            common.cached_tokens = generation.cached_tokens
            if common.stream:
                return await _vllm_stream(request, state, common, plan, generation, shape)
            drop_after = state.faults.drop_mid_stream_after
            if drop_after is not None and plan.eval_count >= drop_after:
                await generation.decode(drop_after)
                await drop(request, state)
                return _openai_error(500, MID_STREAM_ERROR)
            await generation.decode(plan.eval_count)
            _keep_answer(generation, plan, shape)
            return json_response(_vllm_reply(common, plan, shape))
    except QueueFull:
        return _openai_error(503, BUSY_MESSAGE)


def _keep_answer(generation: Generation, plan: AnswerPlan, shape: str) -> None:
    if shape == "chat" and plan.tool_call is None:
        generation.keep_answer(plan.text)


def _finish_reason(plan: AnswerPlan) -> str:
    return "tool_calls" if plan.tool_call is not None else plan.finish_reason


def _vllm_reply(common: _OpenAIRequest, plan: AnswerPlan, shape: str) -> dict[str, Any]:
    created = int(time.time())
    if shape == "completion":
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": created,
            "model": common.name,
            "choices": [
                {
                    "index": 0,
                    "text": plan.text,
                    "logprobs": None,
                    "finish_reason": plan.finish_reason,
                    "stop_reason": None,
                }
            ],
            "usage": _usage(common, plan),
        }
    message: dict[str, Any] = {"role": "assistant", "content": plan.text, "refusal": None}
    if plan.thinking:
        message["reasoning_content"] = plan.thinking_text
    call = plan.tool_call
    if call is not None:
        message["content"] = None
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": orjson.dumps(call.arguments).decode()},
            }
        ]
    else:
        message["tool_calls"] = []
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": created,
        "model": common.name,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(plan),
                "stop_reason": None,
            }
        ],
        "usage": _usage(common, plan),
    }


def _vllm_deltas(plan: AnswerPlan, shape: str) -> list[tuple[dict[str, Any], int]]:
    """(delta or completion text holder, tokens) per streamed chunk after the role chunk."""
    if shape == "completion":
        return [({"text": piece}, 1) for piece in plan.content]
    deltas: list[tuple[dict[str, Any], int]] = [
        ({"reasoning_content": piece}, 1) for piece in plan.thinking
    ]
    call = plan.tool_call
    if call is not None:
        arguments = orjson.dumps(call.arguments).decode()
        head = {
            "index": 0,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        deltas.append(({"tool_calls": [head]}, 1))
        tail = {"index": 0, "function": {"arguments": arguments}}
        deltas.append(({"tool_calls": [tail]}, max(plan.tool_tokens - 1, 0)))
    deltas.extend(({"content": piece}, 1) for piece in plan.content)
    return deltas


async def _vllm_stream(
    request: web.Request,
    state: SimState,
    common: _OpenAIRequest,
    plan: AnswerPlan,
    generation: Generation,
    shape: str,
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": SSE, "Cache-Control": "no-cache"})
    await response.prepare(request)
    created = int(time.time())
    if shape == "chat":
        base: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
        }
    else:
        base = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion"}
    base["created"] = created
    base["model"] = common.name

    def chunk(payload: dict[str, Any], finish: str | None) -> bytes:
        if shape == "chat":
            choice = {"index": 0, "delta": payload, "logprobs": None, "finish_reason": finish}
        else:
            choice = {
                "index": 0,
                "text": payload.get("text", ""),
                "logprobs": None,
                "finish_reason": finish,
            }
        data = {**base, "choices": [choice]}
        if common.include_usage:
            data["usage"] = None
        return sse_event(data)

    emitted = 0
    if shape == "chat":
        await response.write(chunk({"role": "assistant", "content": ""}, None))
    for delta, tokens in _vllm_deltas(plan, shape):
        if await maybe_drop(request, state, response, emitted, _vllm_drop_tail()):
            return response
        await generation.decode(tokens)
        await response.write(chunk(delta, None))
        emitted += 1
    if await maybe_drop(request, state, response, emitted, _vllm_drop_tail()):
        return response
    _keep_answer(generation, plan, shape)
    await response.write(chunk({} if shape == "chat" else {"text": ""}, _finish_reason(plan)))
    if common.include_usage:
        await response.write(sse_event({**base, "choices": [], "usage": _usage(common, plan)}))
    await response.write(SSE_DONE)
    await response.write_eof()
    return response


async def vllm_embeddings(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = request_body(request)
    if isinstance(body, str):
        return _openai_error(400, body)
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        texts = [raw_input]
    elif isinstance(raw_input, list) and raw_input:
        texts = [item if isinstance(item, str) else str(item) for item in raw_input]
    else:
        return _openai_error(400, "input must be a string or a non-empty list")
    tokens = sum(estimate_text_tokens(text) for text in texts)
    common = _openai_common(state, body, tokens, default_max=None)
    if isinstance(common, web.Response):
        return common
    injected = _vllm_injected(state)
    if injected is not None:
        return injected
    if await prefill_only(state, common.name, tokens) is None:
        return _openai_error(503, BUSY_MESSAGE)
    dim = state.config.embedding_dim
    data = [
        {"object": "embedding", "embedding": embedding_vector(text, dim), "index": i}
        for i, text in enumerate(texts)
    ]
    return json_response(
        {
            "id": f"embd-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": common.name,
            "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", vllm_health)
    app.router.add_get("/version", vllm_version)
    app.router.add_get("/v1/models", vllm_models)
    app.router.add_get("/metrics", vllm_metrics)
    app.router.add_post("/v1/chat/completions", vllm_chat)
    app.router.add_post("/v1/completions", vllm_completions)
    app.router.add_post("/v1/embeddings", vllm_embeddings)
