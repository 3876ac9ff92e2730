"""A SIMULATED GPU inference node: a real HTTP server that speaks Ollama's native API or
vLLM's OpenAI-compatible API, with a timing model and fault injection.

Run it with ``python -m nodes.simulator --help`` (or ``clawdbot simulate-node``). The first
stdout line says it is simulated and gives the URLs::

    Clawdbot simulated GPU node (not a real GPU) listening on http://127.0.0.1:PORT api=ollama \
gpu=A100 models=qwen3:32b control=http://127.0.0.1:CPORT

Test and benchmark hooks, on the main port and on the control port (the control port stays
up while ``refuse_connections`` has closed the main one):

* ``GET/POST /_sim/control``  faults and config (see ``simengine.apply_control``)
* ``GET /_sim/stats``         counters, slots, loaded models
* ``GET /_sim/requests?limit=N`` and ``POST /_sim/requests/clear``  recorded requests

This module imports nothing from Django or the rest of the project except ``simengine``:
benchmarks run it standalone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import signal
import socket
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from nodes.simengine import (
    AnswerPlan,
    AnswerRequest,
    ControlError,
    Faults,
    ModelCard,
    SimConfig,
    apply_control,
    chat_seed_text,
    cold_load_seconds,
    context_tokens,
    decode_seconds,
    effective_num_ctx,
    embedding_vector,
    estimate_chat_tokens,
    estimate_prompt_tokens,
    estimate_text_tokens,
    model_card,
    normalize_model_name,
    parse_keep_alive,
    plan_answer,
    prefill_seconds,
    seed_for,
    truncated_prompt_tokens,
    vllm_context_error,
)

BANNER = "Clawdbot simulated GPU node (not a real GPU)"
OLLAMA_VERSION = "0.32.0-simulated"
VLLM_VERSION = "0.10.1-simulated"
REQUEST_RING_SIZE = 200
DEFAULT_PORTS = {"ollama": 11434, "openai": 8000}
BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
PROMPT_TOO_LONG = "the prompt is longer than the context length currently available to the model"
OLLAMA_RUNNER_DEAD = "llama runner process has terminated: exit status 2"
VLLM_ENGINE_DEAD = "EngineCore encountered an issue. See stack trace (above) for the root cause."
INJECTED_ERROR = "simulated failure (error_rate)"
MID_STREAM_ERROR = "simulated failure: the runner stopped mid-stream"
# time.ParseDuration's largest value, about 292 years: what Ollama shows for "forever".
FOREVER = timedelta(days=106_751)
SIMULATED_HEADER = "X-Clawdbot-Simulated"
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"


class QueueFull(Exception):
    """All parallel slots are busy and the wait queue is at --max-queue."""


class _BadBody:
    """Marks a request body that is not JSON; ``message`` is what the 400 says."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class Slots:
    """``--parallel`` sequences at once, ``--max-queue`` waiting, FIFO, cancellation-safe."""

    def __init__(self, parallel: int, max_queue: int) -> None:
        self.parallel = parallel
        self.max_queue = max_queue
        self.free = parallel
        self.max_waiting = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    @property
    def running(self) -> int:
        return self.parallel - self.free

    @property
    def waiting(self) -> int:
        return len(self.waiters)

    async def acquire(self) -> None:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return
        if len(self.waiters) >= self.max_queue:
            raise QueueFull
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(future)
        self.max_waiting = max(self.max_waiting, len(self.waiters))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # The slot was handed over just as the client went away: pass it on.
                self.release()
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(future)
            raise

    def release(self) -> None:
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_result(None)
                return
        self.free += 1


class LoadedModel:
    __slots__ = ("active", "expires", "keep_alive_s", "num_ctx", "unload_when_idle")

    def __init__(self, num_ctx: int, expires: float) -> None:
        self.num_ctx = num_ctx
        self.active = 0
        self.expires = expires
        self.keep_alive_s = 0.0
        self.unload_when_idle = False


class Generation:
    """One admitted request: holds a parallel slot (and, for Ollama, the loaded model) while
    in ``async with``, paces prefill and decode, and measures what it paid.

    Entering raises QueueFull before anything is held. Leaving, also by cancellation when
    the client goes away, gives the slot back at once.
    """

    __slots__ = (
        "_deadline",
        "_decode_start",
        "eval_ns",
        "keep_alive_s",
        "load_ns",
        "name",
        "num_ctx",
        "prompt_eval_ns",
        "state",
    )

    def __init__(self, state: SimState, name: str, *, num_ctx: int, keep_alive_s: float) -> None:
        self.state = state
        self.name = name
        self.num_ctx = num_ctx
        self.keep_alive_s = keep_alive_s
        self.load_ns = 1
        self.prompt_eval_ns = 1
        self.eval_ns = 1
        self._decode_start = 0
        self._deadline = 0.0

    async def __aenter__(self) -> Generation:
        state = self.state
        state.waiting_by_model[self.name] += 1
        try:
            await state.slots.acquire()
        finally:
            state.waiting_by_model[self.name] -= 1
        state.running_by_model[self.name] += 1
        state.max_running_seen = max(state.max_running_seen, state.slots.running)
        if state.config.api == "ollama":
            try:
                self.load_ns = await state.load(self.name, self.num_ctx)
            except BaseException:
                self._leave_slot()
                raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.state.config.api == "ollama":
            self.state.unpin(self.name, self.keep_alive_s)
        self._leave_slot()

    def _leave_slot(self) -> None:
        self.state.running_by_model[self.name] -= 1
        self.state.slots.release()

    async def prefill(self, tokens: int) -> None:
        state = self.state
        started = time.perf_counter_ns()
        if not state.config.zero_latency:
            delay = prefill_seconds(
                tokens,
                prefill_ms=state.config.prefill_ms,
                gpu_factor=state.gpu_factor,
                speed=state.faults.speed,
            )
            if delay > 0:
                await asyncio.sleep(delay)
            self._deadline = asyncio.get_running_loop().time()
        self._decode_start = time.perf_counter_ns()
        self.prompt_eval_ns = max(self._decode_start - started, 1)
        state.prompt_tokens_total += tokens

    async def decode(self, tokens: int) -> None:
        """Pay for ``tokens`` output tokens; a deadline keeps many short sleeps from drifting."""
        state = self.state
        state.generated_tokens_total += tokens
        if state.config.zero_latency or tokens <= 0:
            return
        loop = asyncio.get_running_loop()
        for _ in range(tokens):
            self._deadline += decode_seconds(
                running=state.slots.running,
                decode_ms=state.config.decode_ms,
                gpu_factor=state.gpu_factor,
                speed=state.faults.speed,
            )
            wait = self._deadline - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)

    def finish(self) -> None:
        self.eval_ns = max(time.perf_counter_ns() - self._decode_start, 1)


class Listener:
    """The main port: closing it makes connects fail with ECONNREFUSED, reopening rebinds."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self.runner = runner
        self.host = host
        self.port = port
        self.site: web.SockSite | None = None

    def reserve(self) -> None:
        """Learn the port (``--port 0``) without listening yet."""
        with _bind(self.host, self.port) as sock:
            self.port = sock.getsockname()[1]

    async def open(self) -> None:
        if self.site is not None:
            return
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        site = web.SockSite(self.runner, sock, shutdown_timeout=0.5)
        await site.start()
        self.site = site

    async def close(self) -> None:
        if self.site is None:
            return
        site, self.site = self.site, None
        await site.stop()
        # A dead node also drops its kept-alive connections, or pooled clients would not notice.
        server = self.runner.server
        if server is not None:
            for connection in server.connections:
                connection.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class SimState:
    """Everything the handlers share: config, faults, slots, loaded models, counters."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.gpu_factor = config.gpu_factor
        self.keep_alive_default = config.keep_alive_s
        self.cards: dict[str, ModelCard] = {name: model_card(name) for name in config.models}
        self.faults: Faults = config.initial_faults()
        self.rng = random.Random(config.fault_seed)
        self.slots = Slots(config.parallel, config.max_queue)
        self.loaded: dict[str, LoadedModel] = {}
        self.load_locks: dict[str, asyncio.Lock] = {}
        self.hang_released = asyncio.Event()
        if not self.faults.hang:
            self.hang_released.set()
        self.started = datetime.now(UTC)
        self.started_unix = int(time.time())
        self.listener: Listener | None = None
        self.control_url = ""
        self.requests: deque[tuple[Any, ...]] = deque(maxlen=REQUEST_RING_SIZE)
        self.request_seq = 0
        self.requests_by_path: Counter[str] = Counter()
        self.responses_by_status: Counter[int] = Counter()
        self.in_flight = 0
        self.max_running_seen = 0
        self.running_by_model: Counter[str] = Counter()
        self.waiting_by_model: Counter[str] = Counter()
        self.injected_errors = 0
        self.dropped_streams = 0
        self.prompt_tokens_total = 0
        self.generated_tokens_total = 0
        if config.preloaded and config.api == "ollama":
            expires = _monotonic() + self.keep_alive_default
            for name in config.models:
                num_ctx = effective_num_ctx(
                    None, default=config.default_num_ctx, trained=config.context_length
                )
                self.loaded[name] = LoadedModel(num_ctx, expires)

    # --- models ----------------------------------------------------------------------

    def resolve(self, requested: object) -> str | None:
        if not isinstance(requested, str) or not requested:
            return None
        if requested in self.cards:
            return requested
        normalized = normalize_model_name(requested)
        return normalized if normalized in self.cards else None

    def is_loaded(self, model: LoadedModel, now: float) -> bool:
        return model.active > 0 or model.expires > now

    def loaded_models(self) -> list[tuple[str, LoadedModel]]:
        now = _monotonic()
        for name in [n for n, m in self.loaded.items() if not self.is_loaded(m, now)]:
            del self.loaded[name]
        return sorted(self.loaded.items(), key=lambda item: item[1].expires, reverse=True)

    async def load(self, name: str, num_ctx: int) -> int:
        """Make ``name`` resident with ``num_ctx`` and pin it; returns nanoseconds spent."""
        started = time.perf_counter_ns()
        model = self.loaded.get(name)
        if model is None or model.num_ctx != num_ctx or not self.is_loaded(model, _monotonic()):
            if self.config.zero_latency:
                model = self._install(name, num_ctx)
            else:
                lock = self.load_locks.setdefault(name, asyncio.Lock())
                async with lock:
                    model = self.loaded.get(name)
                    fresh = model is not None and model.num_ctx == num_ctx
                    if not (fresh and model is not None and self.is_loaded(model, _monotonic())):
                        # A different num_ctx means a reload in Ollama, so it costs a cold load.
                        delay = cold_load_seconds(
                            cold_load_ms=self.config.cold_load_ms, speed=self.faults.speed
                        )
                        if delay > 0:
                            await asyncio.sleep(delay)
                        model = self._install(name, num_ctx)
        assert model is not None
        model.active += 1
        return max(time.perf_counter_ns() - started, 1)

    def _install(self, name: str, num_ctx: int) -> LoadedModel:
        previous = self.loaded.get(name)
        model = LoadedModel(num_ctx, _monotonic() + self.keep_alive_default)
        if previous is not None:
            model.active = previous.active
        self.loaded[name] = model
        return model

    def unpin(self, name: str, keep_alive_s: float) -> None:
        model = self.loaded.get(name)
        if model is None:
            return
        model.active = max(model.active - 1, 0)
        model.keep_alive_s = keep_alive_s
        model.expires = _monotonic() + keep_alive_s
        if model.active == 0 and (keep_alive_s == 0 or model.unload_when_idle):
            del self.loaded[name]

    def unload(self, name: str) -> None:
        model = self.loaded.get(name)
        if model is None:
            return
        if model.active:
            model.unload_when_idle = True
        else:
            del self.loaded[name]

    # --- faults ----------------------------------------------------------------------

    def injected_status(self) -> int | None:
        """Status of an injected failure for this inference request, or None."""
        faults = self.faults
        if faults.engine_dead:
            self.injected_errors += 1
            return 500
        if faults.error_rate > 0 and (
            faults.error_rate >= 1.0 or self.rng.random() < faults.error_rate
        ):
            self.injected_errors += 1
            return faults.error_status
        return None

    async def set_faults(self, faults: Faults) -> None:
        previous, self.faults = self.faults, faults
        if faults.hang:
            self.hang_released.clear()
        else:
            self.hang_released.set()
        if self.listener is not None and faults.refuse_connections != previous.refuse_connections:
            if faults.refuse_connections:
                await self.listener.close()
            else:
                await self.listener.open()

    # --- introspection ---------------------------------------------------------------

    def record(self, request: web.Request, body: object) -> None:
        self.request_seq += 1
        # Headers are kept as aiohttp's immutable proxy and only copied when someone asks.
        self.requests.append(
            (
                self.request_seq,
                time.time(),
                request.method,
                request.path,
                request.query_string,
                request.headers,
                body,
            )
        )

    def recorded(self, limit: int) -> list[dict[str, Any]]:
        items = list(self.requests)[-limit:] if limit else []
        out: list[dict[str, Any]] = []
        for seq, at, method, path, query, headers, body in items:
            entry: dict[str, Any] = {
                "seq": seq,
                "time": at,
                "method": method,
                "path": path,
                "query": query,
                "headers": {k.lower(): v for k, v in headers.items()},
                "body": None if isinstance(body, _BadBody) else body,
            }
            if isinstance(body, _BadBody):
                entry["body_error"] = body.message
            out.append(entry)
        return out

    def stats(self) -> dict[str, Any]:
        now = _monotonic()
        loaded = [
            {
                "name": name,
                "num_ctx": model.num_ctx,
                "active": model.active,
                "expires_in_s": None if math.isinf(model.expires) else model.expires - now,
            }
            for name, model in self.loaded_models()
        ]
        return {
            "api": self.config.api,
            "requests_by_path": dict(self.requests_by_path),
            "responses_by_status": {str(k): v for k, v in self.responses_by_status.items()},
            "in_flight": self.in_flight,
            "running": self.slots.running,
            "queued": self.slots.waiting,
            "max_running_seen": self.max_running_seen,
            "max_queued_seen": self.slots.max_waiting,
            "parallel": self.config.parallel,
            "max_queue": self.config.max_queue,
            "injected_errors": self.injected_errors,
            "dropped_streams": self.dropped_streams,
            "prompt_tokens_total": self.prompt_tokens_total,
            "generated_tokens_total": self.generated_tokens_total,
            "loaded_models": loaded,
        }

    def control_view(self) -> dict[str, Any]:
        listener = self.listener
        return {
            "faults": self.faults.to_dict(),
            "config": self.config.to_dict(),
            "url": f"http://{_host_for_url(self.config.host)}:{listener.port}" if listener else "",
            "control_url": self.control_url,
            "listening": bool(listener and listener.site),
        }


STATE = web.AppKey("sim_state", SimState)
BODY = "sim.body"


def _monotonic() -> float:
    return time.monotonic()


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _rfc3339(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _ollama_error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _openai_error_body(status: int, message: str) -> dict[str, Any]:
    if status == 404:
        kind = "NotFoundError"
    elif status < 500:
        kind = "BadRequestError"
    else:
        kind = "InternalServerError"
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


def _openai_error(status: int, message: str) -> web.Response:
    return _json(_openai_error_body(status, message), status)


def _sse(data: object) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def _body(request: web.Request) -> dict[str, Any] | str:
    """The JSON object the middleware parsed, or the message for a 400."""
    body = request.get(BODY)
    if body is None:
        return "missing request body"
    if isinstance(body, _BadBody):
        return body.message
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    return body


async def _abort_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()


# --- middleware and signals -----------------------------------------------------------


@web.middleware
async def _observe(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Record every non-control request, apply ``hang``, count statuses and in-flight."""
    if request.path.startswith("/_sim/"):
        return await handler(request)
    state = request.app[STATE]
    body: object = None
    if request.body_exists:
        raw = await request.read()
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                body = _BadBody(f"invalid JSON body: {exc}")
    request[BODY] = body
    state.record(request, body)
    state.requests_by_path[request.path] += 1
    state.in_flight += 1
    try:
        if not state.hang_released.is_set():
            await state.hang_released.wait()
        response = await handler(request)
        state.responses_by_status[response.status] += 1
        return response
    except web.HTTPException as exc:
        state.responses_by_status[exc.status] += 1
        raise
    finally:
        state.in_flight -= 1


async def _mark_simulated(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[SIMULATED_HEADER] = "1"


# --- control endpoints (main port and control port) -----------------------------------


async def control_get(request: web.Request) -> web.Response:
    return _json(request.app[STATE].control_view())


async def control_post(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        payload = orjson.loads(await request.read() or b"{}")
        faults = apply_control(state.faults, payload, baseline_speed=state.config.speed)
    except orjson.JSONDecodeError as exc:
        return _json({"error": f"invalid JSON body: {exc}"}, 400)
    except ControlError as exc:
        return _json({"error": str(exc)}, 400)
    try:
        await state.set_faults(faults)
    except OSError as exc:
        return _json({"error": f"could not reopen the main port: {exc}"}, 500)
    return _json(state.control_view())


async def stats_get(request: web.Request) -> web.Response:
    return _json(request.app[STATE].stats())


async def requests_get(request: web.Request) -> web.Response:
    raw = request.query.get("limit", str(REQUEST_RING_SIZE))
    try:
        limit = int(raw)
    except ValueError:
        limit = -1
    if limit < 0:
        return _json({"error": "limit must be a non-negative integer"}, 400)
    return _json({"requests": request.app[STATE].recorded(limit)})


async def requests_clear(request: web.Request) -> web.Response:
    request.app[STATE].requests.clear()
    return _json({"cleared": True})


def _add_control_routes(app: web.Application) -> None:
    app.router.add_get("/_sim/control", control_get)
    app.router.add_post("/_sim/control", control_post)
    app.router.add_get("/_sim/stats", stats_get)
    app.router.add_get("/_sim/requests", requests_get)
    app.router.add_post("/_sim/requests/clear", requests_clear)


# --- Ollama native API ----------------------------------------------------------------


async def ollama_root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


async def ollama_version(request: web.Request) -> web.Response:
    return _json({"version": OLLAMA_VERSION})


def _ollama_details(card: ModelCard) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": card.family,
        "families": [card.family],
        "parameter_size": card.parameter_size,
        "quantization_level": card.quantization_level,
    }


async def ollama_tags(request: web.Request) -> web.Response:
    state = request.app[STATE]
    modified = _rfc3339(state.started)
    models = [
        {
            "name": card.name,
            "model": card.name,
            "modified_at": modified,
            "size": card.size_bytes,
            "digest": card.digest,
            "details": _ollama_details(card),
        }
        for card in state.cards.values()
    ]
    return _json({"models": models})


async def ollama_show(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = _body(request)
    if isinstance(body, str):
        return _ollama_error(400, body)
    requested = body.get("model") or body.get("name")
    if not requested:
        return _ollama_error(400, "model is required")
    name = state.resolve(requested)
    if name is None:
        return _ollama_error(404, f"model '{requested}' not found")
    card = state.cards[name]
    arch = card.family
    capabilities = ["embedding"] if card.embedding else ["completion", "tools", "thinking"]
    parameters = 'stop                           "<|im_end|>"\ntemperature                    0.6'
    return _json(
        {
            "modelfile": f"# Modelfile generated by the Clawdbot simulator\nFROM {name}\n",
            "parameters": parameters,
            "template": "{{ .Prompt }}",
            "details": _ollama_details(card),
            "model_info": {
                "general.architecture": arch,
                "general.parameter_count": card.parameter_count,
                "general.file_type": 15,
                f"{arch}.context_length": state.config.context_length,
                f"{arch}.embedding_length": state.config.embedding_dim,
            },
            "capabilities": capabilities,
            "modified_at": _rfc3339(state.started),
        }
    )


async def ollama_ps(request: web.Request) -> web.Response:
    state = request.app[STATE]
    now_wall = datetime.now(UTC)
    now = _monotonic()
    models = []
    for name, model in state.loaded_models():
        card = state.cards[name]
        if math.isinf(model.expires):
            expires = now_wall + FOREVER
        else:
            expires = now_wall + timedelta(seconds=max(model.expires - now, 0.0))
        models.append(
            {
                "name": name,
                "model": name,
                "size": card.size_bytes,
                "size_vram": card.size_bytes,
                "digest": card.digest,
                "details": _ollama_details(card),
                "expires_at": _rfc3339(expires),
                "context_length": model.num_ctx,
            }
        )
    return _json({"models": models})


@dataclass(slots=True)
class _OllamaOptions:
    """The parts of an Ollama request shared by chat, generate and embed."""

    body: dict[str, Any]
    name: str
    requested: str
    options: dict[str, Any]
    keep_alive_s: float
    num_ctx: int


def _ollama_common(state: SimState, request: web.Request) -> _OllamaOptions | web.Response:
    body = _body(request)
    if isinstance(body, str):
        return _ollama_error(400, body)
    requested = body.get("model")
    if not requested:
        return _ollama_error(400, "model is required")
    if not isinstance(requested, str):
        return _ollama_error(400, "model must be a string")
    name = state.resolve(requested)
    if name is None:
        return _ollama_error(404, f"model '{requested}' not found")
    options = body.get("options")
    if options is None:
        options = {}
    elif not isinstance(options, dict):
        return _ollama_error(400, "options must be a JSON object")
    for key in ("num_ctx", "num_predict", "num_keep", "seed"):
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return _ollama_error(400, f"invalid option {key!r}: expected a number")
    try:
        keep_alive_s = parse_keep_alive(body.get("keep_alive"), state.keep_alive_default)
    except ValueError as exc:
        return _ollama_error(400, str(exc))
    num_ctx = effective_num_ctx(
        options.get("num_ctx"),
        default=state.config.default_num_ctx,
        trained=state.config.context_length,
    )
    return _OllamaOptions(body, name, requested, options, keep_alive_s, num_ctx)


def _ollama_format(value: object) -> str | dict[str, Any] | web.Response | None:
    if value is None or value == "":
        return None
    if value == "json" or isinstance(value, dict):
        return value
    return _ollama_error(400, 'invalid format: expected "json" or a valid JSON schema')


def _stops(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(s for s in value if isinstance(s, str))
    return ()


def _int_or_none(value: object) -> int | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return None


async def ollama_chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    common = _ollama_common(state, request)
    if isinstance(common, web.Response):
        return common
    body = common.body
    messages = body.get("messages")
    if messages is None:
        messages = []
    if not isinstance(messages, list):
        return _ollama_error(400, "messages must be a list")
    if not messages:
        return await _ollama_load_or_unload(state, body, common, shape="chat")
    card = state.cards[common.name]
    if card.embedding:
        return _ollama_error(400, f'"{common.requested}" does not support chat')
    fmt = _ollama_format(body.get("format"))
    if isinstance(fmt, web.Response):
        return fmt
    options = common.options
    tools = body.get("tools")
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    tool = tools[0] if isinstance(tools, list) and tools and last.get("role") == "user" else None
    think = body.get("think")
    answer = AnswerRequest(
        seed=seed_for(options.get("seed"), chat_seed_text(messages)),
        max_tokens=_int_or_none(options.get("num_predict")),
        stops=_stops(options.get("stop")),
        response_format=fmt,
        think=bool(think) and think != "none",
        tool=tool if isinstance(tool, dict) else None,
    )
    prompt_tokens = estimate_chat_tokens(messages, tools)
    return await _ollama_generate_response(
        request, state, body, common, answer, prompt_tokens, shape="chat"
    )


async def ollama_generate(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    common = _ollama_common(state, request)
    if isinstance(common, web.Response):
        return common
    body = common.body
    prompt = body.get("prompt") or ""
    images = body.get("images") or []
    if not isinstance(prompt, str) or not isinstance(images, list):
        return _ollama_error(400, "prompt must be a string and images a list")
    if not prompt and not images:
        return await _ollama_load_or_unload(state, body, common, shape="generate")
    if state.cards[common.name].embedding:
        return _ollama_error(400, f'"{common.requested}" does not support generate')
    fmt = _ollama_format(body.get("format"))
    if isinstance(fmt, web.Response):
        return fmt
    system = body.get("system")
    system = system if isinstance(system, str) else ""
    suffix = body.get("suffix")
    suffix = suffix if isinstance(suffix, str) else ""
    context = body.get("context")
    context_len = len(context) if isinstance(context, list) else 0
    options = common.options
    think = body.get("think")
    answer = AnswerRequest(
        seed=seed_for(options.get("seed"), f"{system}\x00{prompt}"),
        max_tokens=_int_or_none(options.get("num_predict")),
        stops=_stops(options.get("stop")),
        response_format=fmt,
        think=bool(think) and think != "none",
    )
    prompt_tokens = estimate_prompt_tokens(
        prompt, system=system, suffix=suffix, images=len(images), context=context_len
    )
    return await _ollama_generate_response(
        request, state, body, common, answer, prompt_tokens, shape="generate"
    )


async def _ollama_load_or_unload(
    state: SimState, body: dict[str, Any], common: _OllamaOptions, *, shape: str
) -> web.Response:
    """Empty messages / no prompt: preload, or unload with ``keep_alive: 0``."""
    reply: dict[str, Any] = {"model": common.requested, "created_at": _rfc3339()}
    if shape == "chat":
        reply["message"] = {"role": "assistant", "content": ""}
    else:
        reply["response"] = ""
    reply["done"] = True
    if common.keep_alive_s == 0 and body.get("keep_alive") is not None:
        state.unload(common.name)
        reply["done_reason"] = "unload"
        return _json(reply)
    status = state.injected_status()
    if status is not None:
        return _ollama_error(status, _ollama_injected_message(state))
    await state.load(common.name, common.num_ctx)
    state.unpin(common.name, common.keep_alive_s)
    reply["done_reason"] = "load"
    return _json(reply)


def _ollama_injected_message(state: SimState) -> str:
    return OLLAMA_RUNNER_DEAD if state.faults.engine_dead else INJECTED_ERROR


def _ollama_pieces(plan: AnswerPlan, shape: str) -> list[tuple[str, Any, int]]:
    """(kind, value, tokens) per streamed chunk, in order."""
    pieces: list[tuple[str, Any, int]] = [("thinking", t, 1) for t in plan.thinking]
    if plan.tool_call is not None and shape == "chat":
        pieces.append(("tool", plan.tool_call, plan.tool_tokens))
    pieces.extend(("content", t, 1) for t in plan.content)
    return pieces


def _ollama_tool_calls(plan: AnswerPlan) -> list[dict[str, Any]]:
    call = plan.tool_call
    if call is None:
        return []
    return [
        {"id": call.id, "function": {"index": 0, "name": call.name, "arguments": call.arguments}}
    ]


def _ollama_done(
    reply: dict[str, Any],
    generation: Generation,
    started: int,
    prompt_eval_count: int,
    plan: AnswerPlan,
    *,
    shape: str,
    seed: int,
) -> None:
    """Close ``reply`` as Ollama's last line: done fields, generate's context, then metrics."""
    reply["done"] = True
    reply["done_reason"] = plan.finish_reason
    if shape == "generate":
        reply["context"] = context_tokens(seed, prompt_eval_count + plan.eval_count)
    reply["total_duration"] = max(time.perf_counter_ns() - started, 1)
    reply["load_duration"] = generation.load_ns
    reply["prompt_eval_count"] = prompt_eval_count
    reply["prompt_eval_duration"] = generation.prompt_eval_ns
    reply["eval_count"] = plan.eval_count
    reply["eval_duration"] = generation.eval_ns


async def _ollama_generate_response(
    request: web.Request,
    state: SimState,
    body: dict[str, Any],
    common: _OllamaOptions,
    answer: AnswerRequest,
    prompt_tokens: int,
    *,
    shape: str,
) -> web.StreamResponse:
    started = time.perf_counter_ns()
    status = state.injected_status()
    if status is not None:
        return _ollama_error(status, _ollama_injected_message(state))
    plan = plan_answer(answer, answer_tokens=state.config.answer_tokens)
    stream = body.get("stream") is not False
    shift_allowed = state.config.ignore_truncate or (
        body.get("truncate") is not False and body.get("shift") is not False
    )
    num_keep = _int_or_none(common.options.get("num_keep"))
    try:
        async with Generation(
            state, common.name, num_ctx=common.num_ctx, keep_alive_s=common.keep_alive_s
        ) as generation:
            if prompt_tokens > common.num_ctx and not shift_allowed:
                return _ollama_error(400, PROMPT_TOO_LONG)
            evaluated = truncated_prompt_tokens(
                prompt_tokens, num_ctx=common.num_ctx, num_keep=4 if num_keep is None else num_keep
            )
            await generation.prefill(evaluated)
            if stream:
                return await _ollama_stream(
                    request, state, common, plan, generation, started, evaluated, shape, answer.seed
                )
            drop_after = state.faults.drop_mid_stream_after
            if drop_after is not None and plan.eval_count >= drop_after:
                await generation.decode(drop_after)
                await _drop(request, state)
                return _ollama_error(500, MID_STREAM_ERROR)
            await generation.decode(plan.eval_count)
            generation.finish()
            reply: dict[str, Any] = {"model": common.requested, "created_at": _rfc3339()}
            if shape == "chat":
                message: dict[str, Any] = {"role": "assistant", "content": plan.text}
                if plan.thinking:
                    message["thinking"] = plan.thinking_text
                if plan.tool_call is not None:
                    message["tool_calls"] = _ollama_tool_calls(plan)
                reply["message"] = message
            else:
                reply["response"] = plan.text
                if plan.thinking:
                    reply["thinking"] = plan.thinking_text
            _ollama_done(reply, generation, started, evaluated, plan, shape=shape, seed=answer.seed)
            return _json(reply)
    except QueueFull:
        return _ollama_error(503, BUSY_MESSAGE)


async def _ollama_stream(
    request: web.Request,
    state: SimState,
    common: _OllamaOptions,
    plan: AnswerPlan,
    generation: Generation,
    started: int,
    evaluated: int,
    shape: str,
    seed: int,
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": NDJSON})
    await response.prepare(request)
    model = common.requested
    emitted = 0
    for kind, value, tokens in _ollama_pieces(plan, shape):
        if await _maybe_drop(request, state, response, emitted, OLLAMA_DROP_TAIL):
            return response
        await generation.decode(tokens)
        chunk: dict[str, Any] = {"model": model, "created_at": _rfc3339()}
        if shape == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": ""}
            if kind == "content":
                message["content"] = value
            elif kind == "thinking":
                message["thinking"] = value
            else:
                message["tool_calls"] = _ollama_tool_calls(plan)
            chunk["message"] = message
        else:
            chunk["response"] = value if kind == "content" else ""
            if kind == "thinking":
                chunk["thinking"] = value
        chunk["done"] = False
        await response.write(orjson.dumps(chunk) + b"\n")
        emitted += 1
    if await _maybe_drop(request, state, response, emitted, OLLAMA_DROP_TAIL):
        return response
    generation.finish()
    final: dict[str, Any] = {"model": model, "created_at": _rfc3339()}
    if shape == "chat":
        final["message"] = {"role": "assistant", "content": ""}
    else:
        final["response"] = ""
    _ollama_done(final, generation, started, evaluated, plan, shape=shape, seed=seed)
    await response.write(orjson.dumps(final) + b"\n")
    await response.write_eof()
    return response


async def _maybe_drop(
    request: web.Request,
    state: SimState,
    response: web.StreamResponse,
    emitted: int,
    error_tail: bytes,
) -> bool:
    """Apply the drop-mid-stream fault: cut the connection, or end with the API's own error
    ending (`error_tail`)."""
    drop_after = state.faults.drop_mid_stream_after
    if drop_after is None or emitted < drop_after:
        return False
    if not await _drop(request, state):
        await response.write(error_tail)
        await response.write_eof()
    return True


async def _drop(request: web.Request, state: SimState) -> bool:
    """Count a drop-mid-stream fault that fires; in abrupt mode also cut the connection, and
    say so, since then nothing more can be written."""
    state.dropped_streams += 1
    if state.faults.drop_mode != "abrupt":
        return False
    await _abort_connection(request)
    return True


def _vllm_drop_tail() -> bytes:
    # vLLM's create_streaming_error_response, then [DONE].
    return _sse(_openai_error_body(500, MID_STREAM_ERROR)) + SSE_DONE


# Ollama's streamResponse: one error line, then the response ends without done:true.
OLLAMA_DROP_TAIL = orjson.dumps({"error": MID_STREAM_ERROR}) + b"\n"


async def ollama_embed(request: web.Request) -> web.Response:
    state = request.app[STATE]
    common = _ollama_common(state, request)
    if isinstance(common, web.Response):
        return common
    raw_input = common.body.get("input")
    if isinstance(raw_input, str):
        inputs = [raw_input]
    elif isinstance(raw_input, list) and all(isinstance(i, str) for i in raw_input):
        inputs = raw_input
    else:
        return _ollama_error(400, "invalid input type")
    result = await _embed(state, common, inputs)
    if isinstance(result, web.Response):
        return result
    vectors, generation, started, tokens = result
    return _json(
        {
            "model": common.requested,
            "embeddings": vectors,
            "total_duration": max(time.perf_counter_ns() - started, 1),
            "load_duration": generation.load_ns,
            "prompt_eval_count": tokens,
        }
    )


async def ollama_embeddings_legacy(request: web.Request) -> web.Response:
    state = request.app[STATE]
    common = _ollama_common(state, request)
    if isinstance(common, web.Response):
        return common
    prompt = common.body.get("prompt")
    if not isinstance(prompt, str):
        return _ollama_error(400, "prompt must be a string")
    result = await _embed(state, common, [prompt])
    if isinstance(result, web.Response):
        return result
    return _json({"embedding": result[0][0]})


async def _embed(
    state: SimState, common: _OllamaOptions, inputs: Sequence[str]
) -> tuple[list[list[float]], Generation, int, int] | web.Response:
    started = time.perf_counter_ns()
    status = state.injected_status()
    if status is not None:
        return _ollama_error(status, _ollama_injected_message(state))
    tokens = sum(estimate_text_tokens(text) for text in inputs)
    generation = await _prefill_only(
        state, common.name, tokens, num_ctx=common.num_ctx, keep_alive_s=common.keep_alive_s
    )
    if generation is None:
        return _ollama_error(503, BUSY_MESSAGE)
    vectors = [embedding_vector(text, state.config.embedding_dim) for text in inputs]
    return vectors, generation, started, tokens


async def _prefill_only(
    state: SimState, name: str, tokens: int, *, num_ctx: int = 0, keep_alive_s: float = 0.0
) -> Generation | None:
    """Admit an embedding request and pay its prefill (there is no decode); None when the
    wait queue is full, which each API words as its own 503."""
    try:
        async with Generation(
            state, name, num_ctx=num_ctx, keep_alive_s=keep_alive_s
        ) as generation:
            await generation.prefill(tokens)
    except QueueFull:
        return None
    return generation


def _ollama_routes(app: web.Application) -> None:
    app.router.add_get("/", ollama_root)
    app.router.add_get("/api/version", ollama_version)
    app.router.add_get("/api/tags", ollama_tags)
    app.router.add_post("/api/show", ollama_show)
    app.router.add_get("/api/ps", ollama_ps)
    app.router.add_post("/api/chat", ollama_chat)
    app.router.add_post("/api/generate", ollama_generate)
    app.router.add_post("/api/embed", ollama_embed)
    app.router.add_post("/api/embeddings", ollama_embeddings_legacy)


# --- vLLM OpenAI-compatible API --------------------------------------------------------


async def vllm_health(request: web.Request) -> web.Response:
    if request.app[STATE].faults.engine_dead:
        return web.Response(status=503)
    return web.Response(status=200)


async def vllm_version(request: web.Request) -> web.Response:
    return _json({"version": VLLM_VERSION})


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
    return _json({"object": "list", "data": data})


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
    usage = state.slots.running / state.config.parallel
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


def _usage(prompt_tokens: int, plan: AnswerPlan) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + plan.eval_count,
        "completion_tokens": plan.eval_count,
    }
    if plan.thinking:
        usage["completion_tokens_details"] = {"reasoning_tokens": len(plan.thinking)}
    return usage


async def vllm_chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = _body(request)
    if isinstance(body, str):
        return _openai_error(400, body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _openai_error(400, "messages must be a non-empty list")
    tools = body.get("tools")
    common = _openai_common(state, body, estimate_chat_tokens(messages, tools), default_max=None)
    if isinstance(common, web.Response):
        return common
    effort = body.get("reasoning_effort")
    answer = AnswerRequest(
        seed=seed_for(body.get("seed"), chat_seed_text(messages)),
        max_tokens=common.max_tokens,
        stops=_stops(body.get("stop")),
        response_format=_openai_format(body.get("response_format")),
        think=isinstance(effort, str) and effort != "none",
        tool=_openai_tool(body, messages),
    )
    return await _vllm_generate(request, state, common, answer, shape="chat")


async def vllm_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = _body(request)
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
    answer = AnswerRequest(
        seed=seed_for(body.get("seed"), seed_text),
        max_tokens=common.max_tokens,
        stops=_stops(body.get("stop")),
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
            await generation.prefill(common.prompt_tokens)
            if common.stream:
                return await _vllm_stream(request, state, common, plan, generation, shape)
            drop_after = state.faults.drop_mid_stream_after
            if drop_after is not None and plan.eval_count >= drop_after:
                await generation.decode(drop_after)
                await _drop(request, state)
                return _openai_error(500, MID_STREAM_ERROR)
            await generation.decode(plan.eval_count)
            return _json(_vllm_reply(common, plan, shape))
    except QueueFull:
        return _openai_error(503, BUSY_MESSAGE)


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
            "usage": _usage(common.prompt_tokens, plan),
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
        "usage": _usage(common.prompt_tokens, plan),
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
        return _sse(data)

    emitted = 0
    if shape == "chat":
        await response.write(chunk({"role": "assistant", "content": ""}, None))
    for delta, tokens in _vllm_deltas(plan, shape):
        if await _maybe_drop(request, state, response, emitted, _vllm_drop_tail()):
            return response
        await generation.decode(tokens)
        await response.write(chunk(delta, None))
        emitted += 1
    if await _maybe_drop(request, state, response, emitted, _vllm_drop_tail()):
        return response
    await response.write(chunk({} if shape == "chat" else {"text": ""}, _finish_reason(plan)))
    if common.include_usage:
        await response.write(
            _sse({**base, "choices": [], "usage": _usage(common.prompt_tokens, plan)})
        )
    await response.write(SSE_DONE)
    await response.write_eof()
    return response


async def vllm_embeddings(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = _body(request)
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
    if await _prefill_only(state, common.name, tokens) is None:
        return _openai_error(503, BUSY_MESSAGE)
    dim = state.config.embedding_dim
    data = [
        {"object": "embedding", "embedding": embedding_vector(text, dim), "index": i}
        for i, text in enumerate(texts)
    ]
    return _json(
        {
            "id": f"embd-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": common.name,
            "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
        }
    )


def _vllm_routes(app: web.Application) -> None:
    app.router.add_get("/health", vllm_health)
    app.router.add_get("/version", vllm_version)
    app.router.add_get("/v1/models", vllm_models)
    app.router.add_get("/metrics", vllm_metrics)
    app.router.add_post("/v1/chat/completions", vllm_chat)
    app.router.add_post("/v1/completions", vllm_completions)
    app.router.add_post("/v1/embeddings", vllm_embeddings)


# --- applications, CLI ---------------------------------------------------------------


def build_apps(state: SimState) -> tuple[web.Application, web.Application]:
    """The main application (API + /_sim) and the control-port application (/_sim only)."""
    main_app = web.Application(middlewares=[_observe], client_max_size=256 * 1024 * 1024)
    main_app[STATE] = state
    if state.config.api == "ollama":
        _ollama_routes(main_app)
    else:
        _vllm_routes(main_app)
    _add_control_routes(main_app)
    control_app = web.Application()
    control_app[STATE] = state
    _add_control_routes(control_app)
    for app in (main_app, control_app):
        app.on_response_prepare.append(_mark_simulated)
    return main_app, control_app


def banner(config: SimConfig, port: int, control_url: str) -> str:
    host = _host_for_url(config.host)
    return (
        f"{BANNER} listening on http://{host}:{port} api={config.api} gpu={config.gpu_type} "
        f"models={','.join(config.models)} control={control_url}"
    )


async def serve(config: SimConfig, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or forever); prints the banner once listening."""
    state = SimState(config)
    main_app, control_app = build_apps(state)
    # Cancelling the handler on disconnect is what frees a parallel slot at once.
    main_runner = web.AppRunner(
        main_app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5
    )
    control_runner = web.AppRunner(control_app, access_log=None, shutdown_timeout=0.5)
    await main_runner.setup()
    await control_runner.setup()
    try:
        listener = Listener(main_runner, config.host, config.port)
        state.listener = listener
        if state.faults.refuse_connections:
            listener.reserve()
        else:
            await listener.open()
        control_sock = _bind(config.host, config.control_port)
        control_port = control_sock.getsockname()[1]
        control_site = web.SockSite(control_runner, control_sock, shutdown_timeout=0.5)
        await control_site.start()
        state.control_url = f"http://{_host_for_url(config.host)}:{control_port}"
        print(banner(config, listener.port, state.control_url), flush=True)
        await (stop or asyncio.Event()).wait()
    finally:
        await main_runner.cleanup()
        await control_runner.cleanup()


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nodes.simulator",
        description=(
            "Run a SIMULATED GPU inference node (not a real GPU): Ollama's native API or "
            "vLLM's OpenAI-compatible API with a timing model and fault injection. "
            "Delays scale as: prefill = tokens * prefill-ms / f, decode per token = "
            "decode-ms / f * (1 + 0.15 * (running - 1)), f = gpu factor * speed; "
            "cold load = cold-load-ms / speed."
        ),
    )
    add = parser.add_argument
    add("--api", choices=("ollama", "openai"), default="ollama", help="API to speak")
    add("--host", default="127.0.0.1")
    add(
        "--port",
        type=int,
        default=None,
        help="main port (default 11434 for ollama, 8000 for openai; 0 picks a free one)",
    )
    add(
        "--control-port",
        type=int,
        default=0,
        help="port that keeps serving /_sim/* while the main port refuses (0 = random)",
    )
    add(
        "--gpu-type",
        default="A100",
        help="A10, A100, H100, H200, L40S, RTX4090 (others count as A10)",
    )
    add(
        "--model",
        dest="model_list",
        action="append",
        default=None,
        metavar="NAME",
        help="model to serve (repeatable; default qwen3:32b)",
    )
    add("--models", default=None, metavar="A,B", help="comma-separated models to serve")
    add("--parallel", type=int, default=4, help="sequences decoded at once")
    add("--max-queue", type=int, default=16, help="requests waiting for a slot before 503")
    add("--decode-ms", type=float, default=30.0, help="ms per output token on an A10")
    add("--prefill-ms", type=float, default=0.5, help="ms per prompt token on an A10")
    add("--speed", type=float, default=1.0, help="multiplier: 2 makes every delay half as long")
    add(
        "--cold-load-ms",
        type=float,
        default=500.0,
        help="model load time (divided by --speed, not by the GPU factor)",
    )
    add("--preloaded", action="store_true", help="models start loaded (Ollama kind)")
    add(
        "--context-length",
        type=int,
        default=32768,
        help="trained context length (Ollama) / max_model_len (openai)",
    )
    add(
        "--default-num-ctx",
        type=int,
        default=4096,
        help="Ollama window when a request sends no options.num_ctx",
    )
    add("--keep-alive", default="5m", help="default Ollama keep_alive")
    add("--answer-tokens", type=int, default=20, help="natural answer length in tokens")
    add("--embedding-dim", type=int, default=384)
    add(
        "--zero-latency",
        action="store_true",
        help="no delays at all (no sleeps, no cold load), for benchmarks",
    )
    add(
        "--error-rate",
        type=float,
        default=0.0,
        help="fraction of inference requests answered with --error-status",
    )
    add("--error-status", type=int, default=500)
    add("--hang", action="store_true", help="accept requests but never answer")
    add(
        "--drop-mid-stream-after",
        type=int,
        default=None,
        metavar="N",
        help="cut streams after N tokens",
    )
    add(
        "--drop-mode",
        choices=("error", "abrupt"),
        default="error",
        help="error: an error line/event then end; abrupt: close the connection",
    )
    add(
        "--refuse-connections",
        action="store_true",
        help="start with the main port closed (ECONNREFUSED)",
    )
    add(
        "--engine-dead",
        action="store_true",
        help="/health answers 503 and inference 500 (vLLM EngineDeadError)",
    )
    add(
        "--ignore-truncate",
        action="store_true",
        help="behave like Ollama before v0.30.9: truncate oversized prompts silently even when "
        "the request sends truncate/shift false",
    )
    add("--fault-seed", type=int, default=None, help="seed for --error-rate draws")
    return parser


def config_from_args(args: argparse.Namespace) -> SimConfig:
    models: list[str] = list(args.model_list or [])
    if args.models:
        models.extend(m.strip() for m in args.models.split(",") if m.strip())
    if not models:
        models = ["qwen3:32b"]
    if args.api == "ollama":
        # Ollama lists every model with its tag; "llama3" is "llama3:latest".
        models = [normalize_model_name(m) for m in models]
    port = DEFAULT_PORTS[args.api] if args.port is None else args.port
    return SimConfig(
        api=args.api,
        host=args.host,
        port=port,
        control_port=args.control_port,
        gpu_type=args.gpu_type,
        models=tuple(dict.fromkeys(models)),
        parallel=args.parallel,
        max_queue=args.max_queue,
        decode_ms=args.decode_ms,
        prefill_ms=args.prefill_ms,
        speed=args.speed,
        cold_load_ms=args.cold_load_ms,
        preloaded=args.preloaded,
        context_length=args.context_length,
        default_num_ctx=args.default_num_ctx,
        keep_alive=args.keep_alive,
        answer_tokens=args.answer_tokens,
        embedding_dim=args.embedding_dim,
        zero_latency=args.zero_latency,
        ignore_truncate=args.ignore_truncate,
        fault_seed=args.fault_seed,
        error_rate=args.error_rate,
        error_status=args.error_status,
        hang=args.hang,
        drop_mid_stream_after=args.drop_mid_stream_after,
        drop_mode=args.drop_mode,
        refuse_connections=args.refuse_connections,
        engine_dead=args.engine_dead,
    )


async def _serve_until_signalled(config: SimConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Only the main thread may install handlers; elsewhere Ctrl-C still raises.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    await serve(config, stop)


def main(
    argv: Sequence[str] | None = None, *, parser: argparse.ArgumentParser | None = None
) -> int:
    parser = parser or build_arg_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    config = config_from_args(args)
    try:
        config.validate()
    except ValueError as exc:
        parser.error(str(exc))
    if config.port != 0 and config.port == config.control_port:
        parser.error("--control-port must differ from --port")
    try:
        asyncio.run(_serve_until_signalled(config))
    except OSError as exc:
        print(f"simulate-node: cannot listen: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
