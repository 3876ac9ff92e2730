"""Passthrough to OpenAI-compatible upstreams (vLLM, Ollama's ``/v1``), as pure functions.

The body goes out nearly as the client sent it; what comes back is fixed up so the client never
sees the node's internal model name or a vendor-specific error shape:

* errors (nested OpenAI, vLLM's nested shape with an integer ``code`` and exception-name
  ``type``, vLLM's old flat ``{"object": "error", ...}``, Ollama's ``{"error": "..."}``,
  FastAPI's ``{"detail": ...}``, HTML) all become the one OpenAI error shape, with
  "maximum context length" rewritten to ``context_length_exceeded``;
* streamed events get their ``model`` rewritten at the byte level: the first event is parsed
  to learn the exact ``"model":"<upstream>"`` bytes, and later events get a plain byte
  substitution. This is safe because inside a JSON string every ``"`` is escaped, so the
  unescaped byte sequence ``"model":`` can only be an object key. Only events that may carry an
  error or a usage object are parsed.

Decisions the protocol leaves open:

* 401/403 from a node mean the *gateway's* credentials for it are wrong, not the client's, so
  they become 500s; 422 (FastAPI validation in old vLLM) becomes 400 as OpenAI uses for bad
  input; 499 and 503 become 503 with ``retry-after``.
* A ``data:`` line that is neither JSON nor ``[DONE]`` is dropped, because the official SDK
  raises on it; SSE comments (``: ping``) pass through as keep-alives.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import GatewayError, model_not_found, upstream_unavailable

NODE_ERROR_PREFIX = "The model node failed: "
MAX_MESSAGE_CHARS = 2000
_OPENAI_4XX_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "rate_limit_error",
        "tokens",
        "requests",
        "insufficient_quota",
    }
)
_DONE_EVENT = b"data: [DONE]\n\n"
_CLOSED_EARLY = "The model node closed the stream before the answer was complete."


def prepare_body(
    raw_body: dict[str, Any],
    *,
    upstream_model: str,
    max_tokens: int | None,
    stream: bool,
    force_usage: bool = False,
) -> dict[str, Any]:
    """The client's body for the upstream: a shallow copy, so a retry can start from the original.

    ``max_tokens`` (the gateway's clamped limit) is written back into whichever of
    ``max_completion_tokens``/``max_tokens`` the client used, or ``max_tokens`` when it used
    neither, since every OpenAI-compatible server understands that one. ``force_usage`` asks
    for the final usage chunk even when the client did not, so the gateway can account for the
    request; pair it with ``SseRelay(strip_usage=True)`` to hide that chunk again.
    """
    body = dict(raw_body)
    body["model"] = upstream_model
    body["stream"] = stream
    if max_tokens is not None:
        used = [f for f in ("max_completion_tokens", "max_tokens") if body.get(f) is not None]
        for field in used or ["max_tokens"]:
            body[field] = max_tokens
    options = body.get("stream_options")
    if not stream:
        body.pop("stream_options", None)
    elif options is not None or force_usage:
        options = dict(options) if isinstance(options, dict) else {}
        # vLLM turns include_usage on whenever stream_options is present; OpenAI defaults it
        # off. Writing it out makes every upstream do what the client asked for.
        options["include_usage"] = force_usage or bool(options.get("include_usage"))
        body["stream_options"] = options
    return body


def rewrite_response(body: bytes, model: str) -> bytes:
    """A non-streaming JSON answer with ``model`` set to the client's model id."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(parsed, dict) or "model" not in parsed:
        return body
    parsed["model"] = model
    return orjson.dumps(parsed)


# --- errors ---------------------------------------------------------------------------------


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "..."


def _fields(parsed: object) -> tuple[str | None, object, object, object]:
    """``(message, type, code, param)`` from any of the error shapes upstreams send."""
    if not isinstance(parsed, dict):
        return None, None, None, None
    error = parsed.get("error")
    if isinstance(error, dict):
        source: dict[str, Any] = error
    elif isinstance(error, str) and error:
        return error, None, None, None
    elif isinstance(parsed.get("message"), str):
        source = parsed  # vLLM before 0.10.1: {"object": "error", "message", "type", "code"}
    elif "detail" in parsed:
        detail = parsed["detail"]
        text = detail if isinstance(detail, str) else orjson.dumps(detail).decode()
        return f"Invalid request: {text}", None, None, None
    else:
        return None, None, None, None
    message = source.get("message")
    return (
        message if isinstance(message, str) and message else None,
        source.get("type"),
        source.get("code"),
        source.get("param"),
    )


def _is_context_overflow(message: str) -> bool:
    lowered = message.lower()
    return "maximum context length" in lowered or (
        "context length" in lowered and "longer than" in lowered
    )


def error_from_fields(
    status: int,
    message: str | None,
    type_: object = None,
    code: object = None,
    param: object = None,
    *,
    model: str | None = None,
) -> GatewayError:
    """Map an upstream error's parts to the client-facing error (one place for all shapes)."""
    if message is not None:
        message = _clip(message)
        if _is_context_overflow(message):
            return GatewayError(
                400, message, "invalid_request_error", "context_length_exceeded", "messages"
            )
    str_param = param if isinstance(param, str) else None
    # vLLM sends the HTTP status as an integer code; OpenAI codes are strings or null.
    str_code = code if isinstance(code, str) and code else None
    if status == 404:
        if model is not None:
            return model_not_found(model)
        return GatewayError(
            404,
            message or "The model does not exist.",
            "invalid_request_error",
            "model_not_found",
            "model",
        )
    if status in (401, 403):
        return GatewayError(
            500,
            NODE_ERROR_PREFIX
            + f"it refused the gateway's credentials (HTTP {status})"
            + (f": {message}" if message else "."),
            "server_error",
        )
    if status in (499, 503):
        return upstream_unavailable(
            "The model node is busy or unavailable, please try again."
            + (f" The node said: {message}" if message else ""),
            retry_after_s=1,
        )
    if status == 429:
        return GatewayError(
            429,
            message or "The model node is rate limiting requests, please try again.",
            "rate_limit_error",
            str_code or "rate_limit_exceeded",
            None,
            {"retry-after": "1"},
        )
    if 400 <= status < 500:
        kind = type_ if isinstance(type_, str) and type_ in _OPENAI_4XX_TYPES else None
        return GatewayError(
            400 if status == 422 else status,
            message or f"The model node rejected the request (HTTP {status}).",
            kind or "invalid_request_error",
            str_code,
            str_param,
        )
    if status < 500:
        status = 500  # a 1xx-3xx "error" is an upstream bug; the client gets a plain 500
    detail = message or f"HTTP {status} without a readable error message"
    return GatewayError(status, NODE_ERROR_PREFIX + detail, "server_error", str_code, None)


def normalise_error(status: int, body: bytes, *, model: str | None = None) -> GatewayError:
    """An upstream error response as the client-facing error.

    ``model`` is the client's model id, used in the 404 message so the node's internal model
    name does not leak. Non-JSON bodies (HTML error pages, proxies) contribute no text at all.
    """
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    message, type_, code, param = _fields(parsed)
    return error_from_fields(status, message, type_, code, param, model=model)


# --- streaming --------------------------------------------------------------------------------


def _skip_ws(data: bytes, i: int) -> int:
    n = len(data)
    while i < n and data[i] in b" \t\r\n":
        i += 1
    return i


def _key_value_start(data: bytes, key: bytes) -> int:
    """Index of the first byte of ``key``'s value (``key`` includes its quotes), or -1."""
    i = data.find(key)
    if i < 0:
        return -1
    i = _skip_ws(data, i + len(key))
    if i >= len(data) or data[i] != 0x3A:  # ':'
        return -1
    return _skip_ws(data, i + 1)


def _string_end(data: bytes, start: int) -> int:
    """Index of the quote closing the JSON string that opens at ``start``, or -1."""
    i = start + 1
    while True:
        i = data.find(b'"', i)
        if i < 0:
            return -1
        backslashes = 0
        j = i - 1
        while data[j] == 0x5C:  # '\\'
            backslashes += 1
            j -= 1
        if backslashes % 2 == 0:
            return i
        i += 1


class SseRelay:
    """Relays an upstream SSE stream, whatever its TCP chunking, with ``model`` rewritten.

    ``feed`` returns only complete events. Afterwards the caller reads ``done`` (``[DONE]``
    seen), ``failed``, ``usage``/``prompt_tokens``/``completion_tokens`` (when a usage chunk
    passed) and ``finish_reason``. ``strip_usage`` drops the ``choices: []`` usage chunk
    (still recording it), for streams where the gateway forced usage on for its own accounting.
    """

    def __init__(self, model: str, *, strip_usage: bool = False) -> None:
        self.model = model
        self.strip_usage = strip_usage
        self.done = False
        self.failed: GatewayError | None = None
        self.usage: dict[str, Any] | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.finish_reason: str | None = None
        self.streamed = 0  # events relayed, about a token each
        self._buffer = b""
        self._model_value = orjson.dumps(model)
        self._pattern: bytes | None = None
        self._replacement = b""

    @property
    def finished(self) -> bool:
        return self.done or self.failed is not None

    def feed(self, chunk: bytes) -> bytes:
        buf = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buf:
            # SSE allows CRLF line ends; a lone trailing CR waits in the buffer for its LF.
            buf = buf.replace(b"\r\n", b"\n")
        if b"\n\n" not in buf:
            self._buffer = buf
            return b""
        events = buf.split(b"\n\n")
        self._buffer = events.pop()
        if len(events) == 1:
            return self._event(events[0]) if events[0] else b""
        return b"".join([self._event(event) for event in events if event])

    def finish(self) -> bytes:
        """Call when the upstream stream ends; a stream cut short gets an error event."""
        out = b""
        rest = self._buffer
        self._buffer = b""
        # Some servers end the last event with a single newline before closing; anything else
        # left over is an event cut off mid-way, and half an event is never sent on.
        if rest.endswith(b"\n") and rest.strip():
            out = self._event(rest.strip(), verify=True)
        if self.finished:
            return out
        self.failed = GatewayError(502, _CLOSED_EARLY, "server_error")
        return out + self.failed.sse_event()

    def _event(self, event: bytes, *, verify: bool = False) -> bytes:
        if self.done or self.failed is not None:
            # Nothing after an error event: vLLM follows it with [DONE], which a client
            # would read as a normal end.
            return b""
        if event.startswith(b"data:") and b"\n" not in event:
            data = event[6:] if event[5:6] == b" " else event[5:]
            return self._data(data, verify)
        lines = event.split(b"\n")
        data_lines = [
            line[6:] if line[5:6] == b" " else line[5:]
            for line in lines
            if line.startswith(b"data:")
        ]
        if not data_lines:
            # Comments and bare `event:`/`id:` lines: keep-alives worth passing on.
            return event + b"\n\n"
        return self._data(b"\n".join(data_lines), verify)

    def _data(self, data: bytes, verify: bool = False) -> bytes:
        if data == b"[DONE]" or (len(data) < 16 and data.strip() == b"[DONE]"):
            self.done = True
            return _DONE_EVENT
        if data[:1] != b"{":
            # Not a JSON object (e.g. `data: keepalive`): the SDK would raise on it.
            return b""
        parsed: Any = None
        if verify or b'"error"' in data:
            parsed = self._parse(data)
            if parsed is None:
                return b""
            if isinstance(parsed, dict) and parsed.get("error"):
                return self._error_event(parsed)
        if b'"usage"' in data:
            usage_at = _key_value_start(data, b'"usage"')
            if usage_at >= 0 and data[usage_at : usage_at + 1] == b"{":  # an object, not null
                if parsed is None:
                    parsed = self._parse(data)
                    if parsed is None:
                        return b""
                if isinstance(parsed, dict):
                    self._record_usage(parsed.get("usage"))
                    if self.strip_usage and parsed.get("choices") == []:
                        return b""
        reason_key = data.find(b'"finish_reason"')
        if reason_key >= 0 and data[reason_key + 15 : reason_key + 17] != b":n":
            self._record_finish_reason(data)
        self.streamed += 1
        return b"data: " + self._rewrite_model(data, parsed) + b"\n\n"

    def _parse(self, data: bytes) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            # Not JSON (e.g. `data: keepalive`): the SDK would raise on it, so drop it.
            return None

    def _rewrite_model(self, data: bytes, parsed: Any) -> bytes:
        pattern = self._pattern
        if pattern is not None:
            i = data.find(pattern)
            if i >= 0:
                return data[:i] + self._replacement + data[i + len(pattern) :]
        if b'"model"' not in data:
            return data
        if parsed is None:
            parsed = self._parse(data)
        if not isinstance(parsed, dict) or not isinstance(parsed.get("model"), str):
            return data
        start = data.find(b'"model"')
        value_at = _key_value_start(data, b'"model"')
        end = _string_end(data, value_at) if data[value_at : value_at + 1] == b'"' else -1
        if end > 0 and orjson.loads(data[value_at : end + 1]) == parsed["model"]:
            self._pattern = data[start : end + 1]
            self._replacement = data[start:value_at] + self._model_value
            return data[:start] + self._replacement + data[end + 1 :]
        # The first `"model"` key was not the top-level one: fall back to a full rewrite.
        parsed["model"] = self.model
        return orjson.dumps(parsed)

    def _record_finish_reason(self, data: bytes) -> None:
        at = _key_value_start(data, b'"finish_reason"')
        if at >= 0 and data[at : at + 1] == b'"':
            end = data.find(b'"', at + 1)
            if end > 0:
                self.finish_reason = data[at + 1 : end].decode("utf-8", "replace")

    @property
    def cached_tokens(self) -> int | None:
        return cached_tokens(self.usage)

    def _record_usage(self, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        self.usage = usage
        prompt = usage.get("prompt_tokens")
        completion = usage.get("completion_tokens")
        self.prompt_tokens = prompt if isinstance(prompt, int) else None
        self.completion_tokens = completion if isinstance(completion, int) else None

    def _error_event(self, parsed: dict[str, Any]) -> bytes:
        message, type_, code, param = _fields(parsed)
        # vLLM's mid-stream errors carry the status they would have had as an integer code.
        status = code if isinstance(code, int) and 400 <= code < 600 else 500
        self.failed = error_from_fields(status, message, type_, code, param, model=self.model)
        return self.failed.sse_event()


def cached_tokens(usage: object) -> int | None:
    """The prompt tokens the server took from its prefix cache (usage.prompt_tokens_details
    .cached_tokens, as vLLM and SGLang report it); None where it says nothing."""
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) and not isinstance(cached, bool) else None
