"""The OpenAI-compatible servers the simulator can imitate (``--server-kind``). They share the
generation routes (``openai_api``); they differ in what else they serve, which is what a
gateway must tell apart: a health route or none, where the context window is said, and the
load gauges on ``/metrics``.

=========  =======  ==================================  ======================================
kind       /health  context window                      /metrics gauges
=========  =======  ==================================  ======================================
vllm       yes      ``/v1/models`` max_model_len        vllm:num_requests_running, ..._waiting,
                                                        vllm:kv_cache_usage_perc
sglang     yes      ``/v1/models`` max_model_len,       sglang:num_running_reqs,
                    ``/get_model_info``,                sglang:num_queue_reqs,
                    ``/get_server_info``                sglang:token_usage
llamacpp   yes      ``/props`` n_ctx (per slot)          llamacpp:requests_processing,
                                                        ..._deferred, ..._kv_cache_usage_ratio
tgi        yes      ``/info`` max_total_tokens          tgi_batch_current_size, tgi_queue_size
openai     no       nowhere (llama-cpp-python, LM       none
                    Studio, llamafile)
=========  =======  ==================================  ======================================

The gauges come from the simulator's real counts: sequences decoding, requests waiting for a
slot, and the KV cache held by the tokens in flight (``SimState.kv_usage``)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from simulator import openai_api
from simulator.replies import json_response
from simulator.state import STATE, SimState

KINDS = ("vllm", "sglang", "llamacpp", "tgi", "openai")
OWNED_BY = {"sglang": "sglang", "llamacpp": "llamacpp", "tgi": "tgi", "openai": "me"}


def add_routes(app: web.Application, kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"--server-kind must be one of {', '.join(KINDS)}")
    if kind != "openai":
        # Ahead of vLLM's own /metrics: the first route registered for a path answers it.
        app.router.add_get("/metrics", _metrics)
    if kind == "vllm":
        openai_api.add_routes(app)
    else:
        app.router.add_get("/v1/models", _models)
        app.router.add_post("/v1/chat/completions", openai_api.vllm_chat)
        app.router.add_post("/v1/completions", openai_api.vllm_completions)
        app.router.add_post("/v1/embeddings", openai_api.vllm_embeddings)
    if kind in ("sglang", "llamacpp", "tgi"):
        app.router.add_get("/health", openai_api.vllm_health)
    if kind == "llamacpp":
        app.router.add_get("/props", _props)
    if kind == "sglang":
        app.router.add_get("/get_model_info", _sglang_model_info)
        app.router.add_get("/get_server_info", _sglang_server_info)
    if kind == "tgi":
        app.router.add_get("/info", _tgi_info)


def _kind(state: SimState) -> str:
    return state.config.server_kind


async def _models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    kind = _kind(state)
    data = []
    for name in state.cards:
        entry: dict[str, Any] = {
            "id": name,
            "object": "model",
            "created": state.started_unix,
            "owned_by": OWNED_BY[kind],
        }
        if kind == "sglang":
            entry["root"] = name
            entry["max_model_len"] = state.config.context_length
        if kind == "llamacpp":
            # The trained length, not the window served: a gateway must not take it for one.
            entry["meta"] = {"n_ctx_train": state.config.context_length * 4, "n_vocab": 151_936}
        data.append(entry)
    return json_response({"object": "list", "data": data})


async def _props(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return json_response(
        {
            "default_generation_settings": {
                "n_ctx": state.config.context_length,
                "params": {"n_predict": -1, "temperature": 0.8},
            },
            "total_slots": state.config.parallel,
            "model_path": next(iter(state.cards)),
            "chat_template": "",
        }
    )


async def _sglang_model_info(request: web.Request) -> web.Response:
    state = request.app[STATE]
    name = next(iter(state.cards))
    return json_response({"model_path": name, "tokenizer_path": name, "is_generation": True})


async def _sglang_server_info(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return json_response(
        {
            "model_path": next(iter(state.cards)),
            "context_length": state.config.context_length,
            "max_running_requests": state.config.parallel,
            "version": "0.4.9-simulated",
        }
    )


async def _tgi_info(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return json_response(
        {
            "model_id": next(iter(state.cards)),
            "max_input_tokens": state.config.context_length - 1,
            "max_total_tokens": state.config.context_length,
            "max_concurrent_requests": state.config.parallel + state.config.max_queue,
            "version": "3.3.4-simulated",
        }
    )


def gauges(state: SimState) -> list[tuple[str, str, dict[str, float]]]:
    """(metric, help, model → value) of the kind's load gauges."""
    running = {name: float(state.running_by_model[name]) for name in state.cards}
    waiting = {name: float(state.waiting_by_model[name]) for name in state.cards}
    kv = {name: state.kv_usage() for name in state.cards}
    kind = _kind(state)
    if kind == "sglang":
        return [
            ("sglang:num_running_reqs", "The number of running requests.", running),
            ("sglang:num_queue_reqs", "The number of requests in the waiting queue.", waiting),
            ("sglang:token_usage", "The token usage.", kv),
        ]
    if kind == "llamacpp":
        return [
            ("llamacpp:requests_processing", "Number of requests processing.", running),
            ("llamacpp:requests_deferred", "Number of requests deferred.", waiting),
            ("llamacpp:kv_cache_usage_ratio", "KV-cache usage. 1 means 100 percent usage.", kv),
        ]
    if kind == "tgi":
        return [
            ("tgi_batch_current_size", "Current batch size", running),
            ("tgi_queue_size", "Current queue size", waiting),
        ]
    return []


async def _metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.config.metrics_delay_ms > 0:
        # A server busy generating can be slow to answer its metrics: what a scraper must bear.
        await asyncio.sleep(state.config.metrics_delay_ms / 1000)
    if _kind(state) == "vllm":
        return await openai_api.vllm_metrics(request)
    lines: list[str] = []
    for metric, help_text, values in gauges(state):
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} gauge")
        if _kind(state) == "llamacpp":  # llama-server serves one model and labels nothing
            lines.append(f"{metric} {next(iter(values.values()), 0.0)}")
        else:
            lines.extend(f'{metric}{{model_name="{name}"}} {v}' for name, v in values.items())
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")
