"""Driving the load: concurrent clients sending chat completions through a server's /v1 API
with a key, over one shared connection pool, each request's outcome measured and summed up
by `loadgen.stats`.

    summary = run_load_sync("http://127.0.0.1:8000", key, "qwen3-32b", concurrency=10,
                            requests=100)
    violations(summary, Thresholds(max_error_rate=0.005))

Before the load, one look at `/v1/models` makes the mistakes that would spoil every
request fail at once, as exceptions: `Unreachable`, `KeyRefused`, `ModelNotOffered`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from loadgen import stats
from loadgen.stats import Outcome, Summary

DEFAULT_PROMPT = "Write one short sentence about the sea."
PROGRESS_INTERVAL_S = 0.25
PREFLIGHT_TIMEOUT_S = 10.0
ERROR_TEXT_LIMIT = 300


class LoadError(Exception):
    """The load could not start; the message says why, for a person."""


class Unreachable(LoadError):
    def __init__(self, url: str, cause: str) -> None:
        super().__init__(f"cannot connect to {url}: {cause}")
        self.url = url
        self.cause = cause


class KeyRefused(LoadError):
    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"{url} refused the API key (401): {message}")
        self.url = url
        self.message = message


class ModelNotOffered(LoadError):
    def __init__(self, model: str, offered: list[str]) -> None:
        listed = ", ".join(offered) or "none"
        super().__init__(f"the server offers no model {model!r} to this key (it offers: {listed})")
        self.model = model
        self.offered = offered


@dataclass(frozen=True)
class Progress:
    """How far a run has come, reported every PROGRESS_INTERVAL_S and once at the end.
    `total` is the request count asked for, `duration_s` the time; one of them is None."""

    done: int
    errors: int
    in_flight: int
    elapsed_s: float
    total: int | None
    duration_s: float | None

    @property
    def requests_per_s(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0


def v1_url(base_url: str) -> str:
    """The /v1 root of a server given as its root or as its /v1."""
    root = base_url.rstrip("/")
    return root if root.endswith("/v1") else root + "/v1"


async def run_load(
    base_url: str,
    api_key: str,
    model: str,
    *,
    concurrency: int,
    requests: int | None = None,
    duration_s: float | None = None,
    stream: bool = False,
    prompt: str = DEFAULT_PROMPT,
    max_tokens: int = 32,
    timeout_s: float = 60,
    on_progress: Callable[[Progress], None] | None = None,
) -> Summary:
    """`concurrency` clients send chat completions to `model`, one after another each, until
    `requests` have been sent in all or `duration_s` has passed (exactly one of the two);
    requests under way at the deadline are waited for. Raises ValueError for bad arguments and
    a LoadError when the server cannot be reached, refuses the key or does not offer the model.
    """
    if (requests is None) == (duration_s is None):
        raise ValueError("give either requests or duration_s, not both or neither")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if requests is not None and requests < 1:
        raise ValueError("requests must be at least 1")
    if duration_s is not None and duration_s <= 0:
        raise ValueError("duration_s must be positive")
    if timeout_s <= 0 or max_tokens < 1:
        raise ValueError("timeout_s must be positive and max_tokens at least 1")
    root = v1_url(base_url)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        headers={"authorization": f"Bearer {api_key}"},
        limits=limits,
        timeout=httpx.Timeout(timeout_s),
    ) as client:
        await preflight(client, root, model)
        run = _Run(
            client,
            root + "/chat/completions",
            model,
            body(model, prompt, max_tokens=max_tokens, stream=stream),
            stream=stream,
            timeout_s=timeout_s,
            total=requests,
            duration_s=duration_s,
        )
        return await run.go(concurrency, on_progress)


def run_load_sync(
    base_url: str,
    api_key: str,
    model: str,
    *,
    concurrency: int,
    requests: int | None = None,
    duration_s: float | None = None,
    stream: bool = False,
    prompt: str = DEFAULT_PROMPT,
    max_tokens: int = 32,
    timeout_s: float = 60,
    on_progress: Callable[[Progress], None] | None = None,
) -> Summary:
    """`run_load` for code that is not async (its own event loop; not from inside one)."""
    return asyncio.run(
        run_load(
            base_url,
            api_key,
            model,
            concurrency=concurrency,
            requests=requests,
            duration_s=duration_s,
            stream=stream,
            prompt=prompt,
            max_tokens=max_tokens,
            timeout_s=timeout_s,
            on_progress=on_progress,
        )
    )


def body(model: str, prompt: str, *, max_tokens: int, stream: bool) -> bytes:
    request: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
    }
    if stream:
        # The usage chunk gives tokens/s for streams too.
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}
    return orjson.dumps(request)


async def preflight(client: httpx.AsyncClient, root: str, model: str) -> None:
    """One GET of the model list: fails at once for an unreachable server, a refused key or a
    model the key may not use; anything else is left for the load to measure."""
    try:
        response = await client.get(root + "/models", timeout=PREFLIGHT_TIMEOUT_S)
    except httpx.TimeoutException:
        raise Unreachable(root, f"no answer within {PREFLIGHT_TIMEOUT_S:g} s") from None
    except httpx.TransportError as exc:
        raise Unreachable(root, _text(exc)) from None
    if response.status_code == 401:
        raise KeyRefused(root, error_message(response.content))
    if response.status_code != 200:
        return
    try:
        listed = orjson.loads(response.content)["data"]
        offered = sorted(str(card["id"]) for card in listed)
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return
    if model not in offered:
        raise ModelNotOffered(model, offered)


def error_message(content: bytes) -> str:
    """The OpenAI-shaped error's message, else the start of the body."""
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:ERROR_TEXT_LIMIT]
        if isinstance(error, str):
            return error[:ERROR_TEXT_LIMIT]
    text = content.decode("utf-8", "replace").strip()
    return text[:ERROR_TEXT_LIMIT] or "(empty body)"


class _Run:
    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        model: str,
        content: bytes,
        *,
        stream: bool,
        timeout_s: float,
        total: int | None,
        duration_s: float | None,
    ) -> None:
        self.client = client
        self.url = url
        self.model = model
        self.content = content
        self.stream = stream
        self.timeout_s = timeout_s
        self.total = total
        self.duration_s = duration_s
        self.outcomes: list[Outcome] = []
        self.errors = 0
        self.issued = 0
        self.started = 0.0

    async def go(self, concurrency: int, on_progress: Callable[[Progress], None] | None) -> Summary:
        self.started = time.monotonic()
        workers = [asyncio.create_task(self.client_loop()) for _ in range(concurrency)]
        reporter = asyncio.create_task(self.report(on_progress)) if on_progress else None
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            if reporter is not None:
                reporter.cancel()
        elapsed = time.monotonic() - self.started
        if on_progress is not None:
            on_progress(self.progress(elapsed))
        return stats.summarize(
            self.outcomes,
            model=self.model,
            stream=self.stream,
            concurrency=concurrency,
            duration_s=elapsed,
        )

    def more(self) -> bool:
        if self.total is not None:
            return self.issued < self.total
        assert self.duration_s is not None
        return time.monotonic() - self.started < self.duration_s

    async def client_loop(self) -> None:
        while self.more():
            self.issued += 1
            outcome = await self.one()
            self.outcomes.append(outcome)
            if not outcome.ok:
                self.errors += 1

    async def report(self, on_progress: Callable[[Progress], None]) -> None:
        while True:
            on_progress(self.progress(time.monotonic() - self.started))
            await asyncio.sleep(PROGRESS_INTERVAL_S)

    def progress(self, elapsed: float) -> Progress:
        done = len(self.outcomes)
        return Progress(
            done=done,
            errors=self.errors,
            in_flight=self.issued - done,
            elapsed_s=elapsed,
            total=self.total,
            duration_s=self.duration_s,
        )

    async def one(self) -> Outcome:
        start = time.monotonic()
        try:
            # httpx's timeout is per read; this one bounds the whole exchange.
            async with asyncio.timeout(self.timeout_s):
                if self.stream:
                    return await self.streamed(start)
                return await self.plain(start)
        except (TimeoutError, httpx.TimeoutException):
            error = f"no complete answer within {self.timeout_s:g} s"
            return Outcome(stats.TIMEOUT, time.monotonic() - start, error=error)
        except httpx.ConnectError as exc:
            return Outcome(stats.CONNECT_ERROR, time.monotonic() - start, error=_text(exc))
        except httpx.RemoteProtocolError as exc:
            return Outcome(stats.PROTOCOL_ERROR, time.monotonic() - start, error=_text(exc))
        except httpx.TransportError as exc:
            return Outcome(stats.NETWORK_ERROR, time.monotonic() - start, error=_text(exc))

    async def plain(self, start: float) -> Outcome:
        response = await self.client.post(
            self.url, content=self.content, headers={"content-type": "application/json"}
        )
        latency = time.monotonic() - start
        status = str(response.status_code)
        if not stats.is_ok(status):
            return Outcome(status, latency, error=error_message(response.content))
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return Outcome(stats.BAD_RESPONSE, latency, error=error_message(response.content))
        return Outcome(status, latency, completion_tokens=_completion_tokens(answer))

    async def streamed(self, start: float) -> Outcome:
        ttft: float | None = None
        tokens: int | None = None
        async with self.client.stream(
            "POST", self.url, content=self.content, headers={"content-type": "application/json"}
        ) as response:
            status = str(response.status_code)
            if not stats.is_ok(status):
                content = await response.aread()
                return Outcome(status, time.monotonic() - start, error=error_message(content))
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return Outcome(status, time.monotonic() - start, ttft, tokens)
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    error = f"an event that is not JSON: {data[:100]}"
                    return Outcome(stats.BAD_RESPONSE, time.monotonic() - start, error=error)
                if not isinstance(chunk, dict):
                    continue
                if "error" in chunk:
                    error = error_message(orjson.dumps(chunk))
                    return Outcome(stats.STREAM_ERROR, time.monotonic() - start, error=error)
                if ttft is None and _has_content(chunk):
                    ttft = time.monotonic() - start
                tokens = _completion_tokens(chunk) or tokens
        error = "the stream ended without data: [DONE]"
        return Outcome(stats.STREAM_ERROR, time.monotonic() - start, error=error)


def _has_content(chunk: dict[str, Any]) -> bool:
    for choice in chunk.get("choices") or ():
        if isinstance(choice, dict):
            delta = choice.get("delta") or {}
            if isinstance(delta, dict) and delta.get("content"):
                return True
    return False


def _completion_tokens(answer: Any) -> int | None:
    usage = answer.get("usage") if isinstance(answer, dict) else None
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) else None


def _text(exc: Exception) -> str:
    return str(exc) or exc.__class__.__name__
