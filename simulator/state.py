"""The simulated node's state: parallel slots and their wait queue, loaded models, one
admitted generation's pacing, the main port's listener, counters and recorded requests."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
import time
from collections import Counter, deque
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from simulator.engine import (
    PREFIX_BLOCK_TOKENS,
    Faults,
    ModelCard,
    PrefixCache,
    SimConfig,
    cached_prompt_tokens,
    chat_prefix_text,
    cold_load_seconds,
    decode_seconds,
    effective_num_ctx,
    model_card,
    normalize_model_name,
    prefill_seconds,
    prefix_block_hashes,
)

REQUEST_RING_SIZE = 200


class QueueFull(Exception):
    """All parallel slots are busy and the wait queue is at --max-queue."""


class BadBody:
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
        "cached_tokens",
        "eval_ns",
        "keep_alive_s",
        "kv_tokens",
        "load_ns",
        "name",
        "num_ctx",
        "prefix_text",
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
        self.kv_tokens = 0  # prompt and output tokens this sequence holds in the KV cache
        self.cached_tokens = 0
        self.prefix_text: str | None = None
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
        self.state.kv_tokens_in_flight -= self.kv_tokens
        self.kv_tokens = 0
        self.state.running_by_model[self.name] -= 1
        self.state.slots.release()

    async def prefill(self, tokens: int, prefix_text: str | None = None) -> None:
        """Pay for the prompt's tokens, less those whose blocks the node's prefix cache holds
        (looked up when ``prefix_text`` is given; its blocks are kept once computed)."""
        state = self.state
        started = time.perf_counter_ns()
        blocks: list[bytes] = []
        if prefix_text is not None and state.prefix_cache.capacity_blocks > 0:
            self.prefix_text = prefix_text
            blocks = prefix_block_hashes(prefix_text)
            self.cached_tokens = state.count_prefix_lookup(blocks, tokens)
        if not state.config.zero_latency:
            delay = prefill_seconds(
                tokens - self.cached_tokens,
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
        self._hold_kv(tokens)
        if blocks:
            state.prefix_cache.insert(blocks)

    async def decode(self, tokens: int) -> None:
        """Pay for ``tokens`` output tokens; a deadline keeps many short sleeps from drifting."""
        state = self.state
        state.generated_tokens_total += tokens
        self._hold_kv(tokens)
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

    def keep_answer(self, answer: str) -> None:
        """Keep the blocks of the prompt followed by its answer, as a chat's assistant
        message: the KV cache holds the generated tokens too, so a follow-up turn that
        repeats the answer in its history hits them."""
        if self.prefix_text is not None:
            text = self.prefix_text + chat_prefix_text([{"role": "assistant", "content": answer}])
            self.state.prefix_cache.insert(prefix_block_hashes(text))

    def _hold_kv(self, tokens: int) -> None:
        self.kv_tokens += tokens
        self.state.kv_tokens_in_flight += tokens

    def finish(self) -> None:
        self.eval_ns = max(time.perf_counter_ns() - self._decode_start, 1)


async def prefill_only(
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


class Listener:
    """The main port: closing it makes connects fail with ECONNREFUSED, reopening rebinds."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self.runner = runner
        self.host = host
        self.port = port
        self.site: web.SockSite | None = None

    def reserve(self) -> None:
        """Learn the port (``--port 0``) without listening yet."""
        with bind_socket(self.host, self.port) as sock:
            self.port = sock.getsockname()[1]

    async def open(self) -> None:
        if self.site is not None:
            return
        sock = bind_socket(self.host, self.port)
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


def bind_socket(host: str, port: int) -> socket.socket:
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
        self.kv_tokens_in_flight = 0  # the load gauges' KV-cache usage (simulator.server_kinds)
        # Zero latency has no prefill to save, and the hot-path benchmark measures this
        # process: no cache then.
        self.prefix_cache = PrefixCache(0 if config.zero_latency else config.prefix_cache_tokens)
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0
        self.prefix_cache_query_tokens = 0
        self.prefix_cache_hit_tokens = 0
        if config.preloaded and config.api == "ollama":
            expires = monotonic() + self.keep_alive_default
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

    def kv_usage(self) -> float:
        """KV-cache usage, 0..1: the tokens the running sequences hold, against a cache
        sized for every parallel slot to fill the context window."""
        capacity = self.config.parallel * self.config.context_length
        return round(min(1.0, max(0, self.kv_tokens_in_flight) / capacity), 6)

    def loaded_models(self) -> list[tuple[str, LoadedModel]]:
        now = monotonic()
        for name in [n for n, m in self.loaded.items() if not self.is_loaded(m, now)]:
            del self.loaded[name]
        return sorted(self.loaded.items(), key=lambda item: item[1].expires, reverse=True)

    async def load(self, name: str, num_ctx: int) -> int:
        """Make ``name`` resident with ``num_ctx`` and pin it; returns nanoseconds spent."""
        started = time.perf_counter_ns()
        model = self.loaded.get(name)
        if model is None or model.num_ctx != num_ctx or not self.is_loaded(model, monotonic()):
            if self.config.zero_latency:
                model = self._install(name, num_ctx)
            else:
                lock = self.load_locks.setdefault(name, asyncio.Lock())
                async with lock:
                    model = self.loaded.get(name)
                    fresh = model is not None and model.num_ctx == num_ctx
                    if not (fresh and model is not None and self.is_loaded(model, monotonic())):
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
        model = LoadedModel(num_ctx, monotonic() + self.keep_alive_default)
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
        model.expires = monotonic() + keep_alive_s
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

    # --- prefix cache ----------------------------------------------------------------

    def count_prefix_lookup(self, blocks: list[bytes], prompt_tokens: int) -> int:
        """Look a prompt's blocks up; count the query and its hit; return the cached tokens."""
        cached = cached_prompt_tokens(self.prefix_cache.lookup(blocks), prompt_tokens)
        self.prefix_cache_queries += 1
        self.prefix_cache_query_tokens += prompt_tokens
        if cached:
            self.prefix_cache_hits += 1
            self.prefix_cache_hit_tokens += cached
        return cached

    def prefix_cache_stats(self) -> dict[str, Any]:
        return {
            "capacity_tokens": self.prefix_cache.capacity_blocks * PREFIX_BLOCK_TOKENS,
            "used_tokens": len(self.prefix_cache) * PREFIX_BLOCK_TOKENS,
            "queries": self.prefix_cache_queries,
            "hits": self.prefix_cache_hits,
            "query_tokens": self.prefix_cache_query_tokens,
            "hit_tokens": self.prefix_cache_hit_tokens,
        }

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
                "body": None if isinstance(body, BadBody) else body,
            }
            if isinstance(body, BadBody):
                entry["body_error"] = body.message
            out.append(entry)
        return out

    def stats(self) -> dict[str, Any]:
        now = monotonic()
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
            "prefix_cache": self.prefix_cache_stats(),
            "loaded_models": loaded,
        }

    def control_view(self) -> dict[str, Any]:
        listener = self.listener
        return {
            "faults": self.faults.to_dict(),
            "config": self.config.to_dict(),
            "url": f"http://{host_for_url(self.config.host)}:{listener.port}" if listener else "",
            "control_url": self.control_url,
            "listening": bool(listener and listener.site),
        }


STATE = web.AppKey("sim_state", SimState)
BODY = "sim.body"


def monotonic() -> float:
    return time.monotonic()


def host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host
