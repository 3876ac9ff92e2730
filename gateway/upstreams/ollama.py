"""OpenAI <-> Ollama native API translation (PROTOCOLS.md section 5), as pure functions.

The I/O layer posts the bodies built here to ``/api/chat``, ``/api/generate`` or ``/api/embed``
and hands each parsed NDJSON line to a stream translator, which returns ready-to-send SSE bytes.
Native endpoints are used instead of Ollama's ``/v1`` layer because only they accept
``options.num_ctx``, ``keep_alive``, ``truncate`` and ``shift``, and only they report a
mid-stream error in a form that can be passed on.

Decisions the protocol leaves open:

* Every body carries ``truncate: false`` and ``shift: false``: a prompt that does not fit the
  window becomes a 400 (mapped to ``context_length_exceeded``) instead of a silently trimmed
  history. Older nodes ignore the unknown fields.
* ``/api/generate`` is called without ``raw``, as Ollama's own ``/v1/completions`` does: the
  model's template applies, which is what instruct models need and what ``suffix`` requires.
* ``tool_choice: "none"`` drops the tools; ``"auto"`` is the node's only behaviour; ``"required"``
  and a named function are refused, since the node cannot force a call.
* Empty tool-call ``arguments`` (``""``) mean ``{}``; some clients send that for
  argument-less functions.
* A ``tool`` message whose ``tool_call_id`` matches no earlier call is sent without
  ``tool_name`` rather than refused; the node does not need it.
* Embeddings: ``dimensions`` is applied here (truncate, then L2-renormalise, which is how
  OpenAI's shortened embeddings behave) so it works on every Ollama release; asking for more
  dimensions than the model has is a 400.
* Text completions refuse ``echo``, ``logprobs`` and several prompts: the node has no
  equivalent, and faking them would hide the gap.
"""

from __future__ import annotations

import array
import base64
import math
import sys
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.errors import GatewayError, bad_request, model_not_found, upstream_unavailable
from gateway.ids import new_id
from gateway.tokens import PART_SEPARATOR
from gateway.validation import ChatRequest, CompletionRequest, EmbeddingRequest, Sampling

SYSTEM_FINGERPRINT = "fp_ollama"
NODE_ERROR_PREFIX = "The model node failed: "
_DATA = b"data: "
_EVENT_END = b"\n\n"
_DONE_EVENT = b"data: [DONE]\n\n"

# OpenAI reasoning_effort -> Ollama think. Ollama knows low/medium/high; the ends are clamped.
_THINK: dict[str, bool | str] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
}


def _unsupported(message: str, param: str) -> GatewayError:
    return bad_request(message, param, "unsupported_parameter")


def _new_call_id() -> str:
    return "call_" + new_id()


# --- requests -------------------------------------------------------------------------------


def _options(sampling: Sampling, *, num_ctx: int, max_tokens: int | None) -> dict[str, Any]:
    # Absent fields stay absent so the Modelfile's defaults apply (Ollama's /v1 layer forces
    # temperature and top_p to 1.0 instead, which surprises people who tuned a Modelfile).
    options: dict[str, Any] = {"num_ctx": num_ctx}
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    for key in ("temperature", "top_p", "top_k", "min_p", "seed"):
        value = getattr(sampling, key)
        if value is not None:
            options[key] = value
    if sampling.presence_penalty is not None:
        options["presence_penalty"] = sampling.presence_penalty
    if sampling.frequency_penalty is not None:
        options["frequency_penalty"] = sampling.frequency_penalty
    if sampling.stop:
        options["stop"] = list(sampling.stop)
    return options


def _image_payload(url: str, param: str) -> str:
    if url.startswith(("http://", "https://")):
        raise _unsupported(
            "Image URLs are not supported by this model's node (Ollama cannot fetch them); "
            "send the image inline as a base64 data URI (data:image/png;base64,...).",
            param,
        )
    if not url.startswith("data:"):
        raise bad_request(
            "An image must be a base64 data URI (data:image/png;base64,...).",
            param,
            "invalid_value",
        )
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64") or not payload:
        raise bad_request(
            "An image data URI must be base64 encoded (data:image/png;base64,...).",
            param,
            "invalid_value",
        )
    return payload


def _flatten_content(content: object, param: str) -> tuple[str, list[str]]:
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        return "", []  # an assistant turn that only calls tools
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        kind = part["type"]
        if kind == "image_url":
            images.append(_image_payload(part["image_url"]["url"], f"{param}[{j}].image_url.url"))
        else:
            texts.append(part[kind])
    return PART_SEPARATOR.join(texts), images


def _tool_arguments(arguments: str, param: str) -> dict[str, Any]:
    if not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError as exc:
        raise bad_request(
            f"Tool call arguments must be a JSON object; could not parse them: {exc}",
            param,
            "invalid_value",
        ) from None
    if not isinstance(parsed, dict):
        raise bad_request(
            f"Tool call arguments must be a JSON object, not a JSON {type(parsed).__name__}.",
            param,
            "invalid_value",
        )
    return parsed


def _chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    tool_names: dict[str, str] = {}
    for i, message in enumerate(messages):
        role = message["role"]
        content, images = _flatten_content(message.get("content"), f"messages[{i}].content")
        native: dict[str, Any] = {
            "role": "system" if role == "developer" else role,
            "content": content,
        }
        if images:
            native["images"] = images
        if role == "assistant":
            reasoning = message.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                native["thinking"] = reasoning
            calls = message.get("tool_calls")
            if calls:
                native_calls = []
                for k, call in enumerate(calls):
                    function = call["function"]
                    tool_names[call["id"]] = function["name"]
                    native_calls.append(
                        {
                            "id": call["id"],
                            "function": {
                                "index": k,
                                "name": function["name"],
                                "arguments": _tool_arguments(
                                    function["arguments"], f"messages[{i}].tool_calls"
                                ),
                            },
                        }
                    )
                native["tool_calls"] = native_calls
        elif role == "tool":
            call_id = message["tool_call_id"]
            native["tool_call_id"] = call_id
            name = tool_names.get(call_id)
            if name is not None:
                native["tool_name"] = name
        out.append(native)
    return out


def chat_to_ollama(
    req: ChatRequest,
    *,
    upstream_model: str,
    num_ctx: int,
    keep_alive: str | int,
    max_tokens: int | None,
) -> dict[str, Any]:
    """Body for ``POST /api/chat``. ``max_tokens`` is the gateway's (possibly clamped) limit."""
    if not req.messages:
        # An empty list is Ollama's preload call: 200 with done_reason "load" and no answer.
        raise bad_request(
            "'messages' must contain at least one message.", "messages", "invalid_value"
        )
    body: dict[str, Any] = {
        "model": upstream_model,
        "messages": _chat_messages(req.messages),
        # Ollama streams when `stream` is omitted; OpenAI does not.
        "stream": req.stream,
        "options": _options(req.sampling, num_ctx=num_ctx, max_tokens=max_tokens),
        "keep_alive": keep_alive,
        "truncate": False,
        "shift": False,
    }
    choice = req.tool_choice
    if isinstance(choice, dict) or choice == "required":
        raise _unsupported(
            "tool_choice 'required' or a named function is not supported by this model's node "
            "(Ollama cannot force a tool call); use 'auto' or leave tool_choice out.",
            "tool_choice",
        )
    if req.tools and choice != "none":
        body["tools"] = req.tools
    fmt = req.response_format
    if fmt is not None:
        if fmt["type"] == "json_object":
            body["format"] = "json"
        elif fmt["type"] == "json_schema":
            body["format"] = fmt["json_schema"]["schema"]
    if req.reasoning_effort is not None:
        body["think"] = _THINK[req.reasoning_effort]
    if req.logprobs:
        body["logprobs"] = True
        if req.top_logprobs is not None:
            body["top_logprobs"] = req.top_logprobs
    return body


def completion_to_ollama(
    req: CompletionRequest,
    *,
    upstream_model: str,
    num_ctx: int,
    keep_alive: str | int,
    max_tokens: int | None,
) -> dict[str, Any]:
    """Body for ``POST /api/generate``."""
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise _unsupported(
                "Several prompts in one request are not supported by this model's node; "
                "send one prompt per request.",
                "prompt",
            )
        prompt = prompt[0]
    if not prompt:
        # An empty prompt is Ollama's preload call: it loads the model and generates nothing.
        raise bad_request(
            "The prompt must not be empty for this model's node.", "prompt", "invalid_value"
        )
    if req.echo:
        raise _unsupported("'echo' is not supported by this model's node.", "echo")
    if req.logprobs is not None:
        raise _unsupported(
            "'logprobs' on text completions is not supported by this model's node; "
            "use chat completions with logprobs instead.",
            "logprobs",
        )
    body: dict[str, Any] = {
        "model": upstream_model,
        "prompt": prompt,
        "stream": req.stream,
        "options": _options(req.sampling, num_ctx=num_ctx, max_tokens=max_tokens),
        "keep_alive": keep_alive,
        "truncate": False,
        "shift": False,
    }
    if req.suffix:
        body["suffix"] = req.suffix
    return body


def embedding_to_ollama(
    req: EmbeddingRequest,
    *,
    upstream_model: str,
    keep_alive: str | int,
    num_ctx: int | None = None,
) -> dict[str, Any]:
    """Body for ``POST /api/embed``; ``truncate: false`` makes an overlong input a 400."""
    body: dict[str, Any] = {
        "model": upstream_model,
        "input": req.input,
        "keep_alive": keep_alive,
        "truncate": False,
    }
    if num_ctx is not None:
        body["options"] = {"num_ctx": num_ctx}
    return body


# --- non-streaming responses ------------------------------------------------------------------


def _finish_reason(done_reason: object, tool_calls: bool) -> str:
    if done_reason == "length":
        return "length"
    # "stop", a missing reason (older builds) and anything unexpected end normally.
    return "tool_calls" if tool_calls else "stop"


def _openai_tool_call(call: Mapping[str, Any], index: int) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = orjson.dumps(arguments if arguments is not None else {}).decode()
    return {
        "index": index,
        "id": call.get("id") or _new_call_id(),
        "type": "function",
        "function": {"name": function.get("name", ""), "arguments": arguments},
    }


def _usage(resp: Mapping[str, Any]) -> dict[str, int]:
    prompt = resp.get("prompt_eval_count") or 0
    completion = resp.get("eval_count") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _logprobs(resp: Mapping[str, Any]) -> dict[str, Any] | None:
    entries = resp.get("logprobs")
    if not entries:
        return None
    # Ollama's entries already have OpenAI's {token, logprob, bytes, top_logprobs} shape.
    return {"content": entries, "refusal": None}


def ollama_chat_to_openai(
    resp: Mapping[str, Any], *, model: str, completion_id: str, created: int
) -> dict[str, Any]:
    """A non-streaming ``/api/chat`` answer as a ``chat.completion``."""
    native = resp.get("message") or {}
    content = native.get("content") or ""
    calls = native.get("tool_calls") or []
    message: dict[str, Any] = {
        "role": "assistant",
        # OpenAI answers a pure tool call with null content, and clients test for that.
        "content": content if content or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = [
            _without_index(_openai_tool_call(call, i)) for i, call in enumerate(calls)
        ]
    thinking = native.get("thinking")
    if thinking:
        message["reasoning_content"] = thinking
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": _logprobs(resp),
                "finish_reason": _finish_reason(resp.get("done_reason"), bool(calls)),
            }
        ],
        "usage": _usage(resp),
    }


def _without_index(call: dict[str, Any]) -> dict[str, Any]:
    # `index` belongs to streamed deltas only; a complete message lists calls in order.
    del call["index"]
    return call


def ollama_generate_to_openai(
    resp: Mapping[str, Any], *, model: str, completion_id: str, created: int
) -> dict[str, Any]:
    """A non-streaming ``/api/generate`` answer as a ``text_completion``."""
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {
                "text": resp.get("response") or "",
                "index": 0,
                "logprobs": None,
                "finish_reason": _finish_reason(resp.get("done_reason"), False),
            }
        ],
        "usage": _usage(resp),
    }


def _float32_base64(vector: list[float]) -> str:
    packed = array.array("f", vector)
    # OpenAI's base64 embeddings are little-endian float32 (numpy's default on every client).
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def _shorten(vector: list[float], dimensions: int) -> list[float]:
    head = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in head))
    return [x / norm for x in head] if norm else head


def ollama_embed_to_openai(
    resp: Mapping[str, Any],
    model: str,
    *,
    encoding_format: str = "float",
    dimensions: int | None = None,
) -> dict[str, Any]:
    """An ``/api/embed`` answer as OpenAI's embedding list."""
    vectors = resp.get("embeddings") or []
    data: list[dict[str, Any]] = []
    for index, vector in enumerate(vectors):
        if dimensions is not None:
            if dimensions > len(vector):
                raise bad_request(
                    f"This model produces {len(vector)}-dimensional embeddings; "
                    f"'dimensions' must be at most {len(vector)}.",
                    "dimensions",
                    "invalid_value",
                )
            vector = _shorten(vector, dimensions)
        embedding: list[float] | str = (
            _float32_base64(vector) if encoding_format == "base64" else vector
        )
        data.append({"object": "embedding", "embedding": embedding, "index": index})
    prompt_tokens = resp.get("prompt_eval_count") or 0
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


# --- errors ---------------------------------------------------------------------------------


def _node_message(body: bytes) -> str | None:
    """The node's own error text, or None when the body is not Ollama's ``{"error": str}``."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, str) and error:
            # A message is one line of text; anything longer is not meant for the client.
            return error.strip().splitlines()[0][:500]
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"]).strip()[:500]
    return None


def _is_context_overflow(message: str) -> bool:
    lowered = message.lower()
    return "context length" in lowered and ("longer than" in lowered or "exceed" in lowered)


def ollama_error(status: int, body: bytes, *, model: str | None = None) -> GatewayError:
    """An Ollama error answered before the first byte, as the client-facing error.

    ``model`` is the client's model id, used for the 404 message so the node's internal model
    name does not leak.
    """
    message = _node_message(body)
    if status == 400:
        text = message or "The model node rejected the request."
        if _is_context_overflow(text):
            return GatewayError(
                400,
                "This model's maximum context length was exceeded: the messages do not fit in "
                f"the context window. The node said: {text}",
                "invalid_request_error",
                "context_length_exceeded",
                "messages",
            )
        return GatewayError(400, text, "invalid_request_error", None, None)
    if status == 404:
        if model is not None:
            return model_not_found(model)
        return GatewayError(
            404, message or "The model does not exist.", "invalid_request_error",
            "model_not_found", "model",
        )  # fmt: skip
    if status in (499, 503):
        # 503 is Ollama's full queue; 499 means the request was cancelled before it was
        # scheduled (the node is draining or restarting). Both are worth a retry elsewhere.
        return upstream_unavailable(
            "The model node is busy, please try again."
            + (f" The node said: {message}" if message else ""),
            retry_after_s=1,
        )
    detail = message or f"HTTP {status} with no error message"
    return GatewayError(500, NODE_ERROR_PREFIX + detail, "server_error", None, None)


# --- streaming --------------------------------------------------------------------------------


def _stream_error(message: str, status: int = 500) -> GatewayError:
    return GatewayError(status, message, "server_error", None, None)


_REASON_JSON = {reason: orjson.dumps(reason) for reason in ("stop", "length", "tool_calls")}
_CLOSED_EARLY = "The model node closed the stream before the answer was complete."


class _StreamBase:
    """State shared by the chat and text-completion stream translators.

    Every chunk is the same JSON object with only the choice varying, so the bytes around the
    choice are built once and each token costs one ``orjson.dumps`` of the piece of text plus a
    few concatenations.
    """

    _object = ""

    def __init__(self, model: str, completion_id: str, created: int, include_usage: bool) -> None:
        self.model = model
        self.completion_id = completion_id
        self.created = created
        self.include_usage = include_usage
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.timings: tuple[float, float] | None = None  # native_timings of the final line
        self.finish_reason: str | None = None
        self.done = False
        self.error: GatewayError | None = None
        self.first_content_emitted = False
        head = orjson.dumps(
            {
                "id": completion_id,
                "object": self._object,
                "created": created,
                "model": model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
            }
        )
        # `{"id":...,"system_fingerprint":"fp_ollama"` then `,"choices":[`
        self._head = _DATA + head[:-1] + b',"choices":['
        self._tail = (b'],"usage":null}' if include_usage else b"]}") + _EVENT_END

    @property
    def finished(self) -> bool:
        return self.done or self.error is not None

    def _event(self, choice: bytes) -> bytes:
        return self._head + choice + self._tail

    def _fail(self, error: GatewayError) -> bytes:
        self.error = error
        return error.sse_event()

    def _error_line(self, obj: Mapping[str, Any]) -> bytes:
        error = obj["error"]
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            text = error["message"]
        elif isinstance(error, str) and error:
            text = error
        else:
            text = "unknown error"
        return self._fail(_stream_error(NODE_ERROR_PREFIX + text))

    def _record_done(self, obj: Mapping[str, Any], tool_calls: bool) -> bytes:
        """Record the final line's statistics; returns the finish reason as JSON bytes."""
        self.done = True
        reason = _finish_reason(obj.get("done_reason"), tool_calls)
        self.finish_reason = reason
        # Missing counts are unknown, not zero: some Ollama releases drop prompt_eval_count for
        # cached prompts, and the caller compares it with its own estimate.
        prompt = obj.get("prompt_eval_count")
        completion = obj.get("eval_count")
        self.prompt_tokens = prompt if isinstance(prompt, int) else None
        self.completion_tokens = completion if isinstance(completion, int) else None
        self.timings = native_timings(obj)
        return _REASON_JSON[reason]

    def _usage_event(self) -> bytes:
        if not self.include_usage:
            return b""
        prompt = self.prompt_tokens or 0
        completion = self.completion_tokens or 0
        usage = orjson.dumps(
            {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        )
        return self._head + b'],"usage":' + usage + b"}" + _EVENT_END

    def finish(self) -> bytes:
        """Call when the upstream stream ends; a stream cut short gets an error event."""
        if self.finished:
            return b""
        return self._fail(_stream_error(_CLOSED_EARLY, 502))


class ChatStreamTranslator(_StreamBase):
    """Ollama ``/api/chat`` NDJSON lines -> OpenAI ``chat.completion.chunk`` SSE events."""

    _object = "chat.completion.chunk"

    def __init__(
        self, model: str, completion_id: str, created: int, include_usage: bool = False
    ) -> None:
        super().__init__(model, completion_id, created, include_usage)
        self._role_sent = False
        self._tool_calls = 0
        self._choice_open = b'{"index":0,"delta":'
        self._choice_close = b',"logprobs":null,"finish_reason":null}'

    def _delta(self, delta: bytes, logprobs: object = None) -> bytes:
        if logprobs:
            return self._event(
                self._choice_open
                + delta
                + b',"logprobs":'
                + orjson.dumps({"content": logprobs, "refusal": None})
                + b',"finish_reason":null}'
            )
        return self._event(self._choice_open + delta + self._choice_close)

    def feed(self, obj: dict[str, Any]) -> bytes:
        """Translate one parsed NDJSON line into zero or more complete SSE events."""
        if self.done or self.error is not None:
            return b""
        if "error" in obj:
            return self._error_line(obj)
        out = b""
        if not self._role_sent:
            self._role_sent = True
            out = self._delta(b'{"role":"assistant","content":""}')
        message = obj.get("message")
        if message:
            logprobs = obj.get("logprobs")
            thinking = message.get("thinking")
            if thinking:
                out += self._delta(
                    b'{"reasoning_content":' + orjson.dumps(thinking) + b"}", logprobs
                )
                logprobs = None
                self.first_content_emitted = True
            content = message.get("content")
            if content:
                out += self._delta(b'{"content":' + orjson.dumps(content) + b"}", logprobs)
                self.first_content_emitted = True
            calls = message.get("tool_calls")
            if calls:
                deltas = []
                for call in calls:
                    deltas.append(_openai_tool_call(call, self._tool_calls))
                    self._tool_calls += 1
                out += self._delta(orjson.dumps({"tool_calls": deltas}))
                self.first_content_emitted = True
        if obj.get("done"):
            reason = self._record_done(obj, self._tool_calls > 0)
            out += self._event(
                self._choice_open + b'{},"logprobs":null,"finish_reason":' + reason + b"}"
            )
            out += self._usage_event() + _DONE_EVENT
        return out


class CompletionStreamTranslator(_StreamBase):
    """Ollama ``/api/generate`` NDJSON lines -> OpenAI ``text_completion`` SSE events.

    ``thinking`` is dropped: legacy completions have no field for it.
    """

    _object = "text_completion"

    def __init__(
        self, model: str, completion_id: str, created: int, include_usage: bool = False
    ) -> None:
        super().__init__(model, completion_id, created, include_usage)
        self._choice_close = b',"index":0,"logprobs":null,"finish_reason":null}'

    def feed(self, obj: dict[str, Any]) -> bytes:
        """Translate one parsed NDJSON line into zero or more complete SSE events."""
        if self.done or self.error is not None:
            return b""
        if "error" in obj:
            return self._error_line(obj)
        out = b""
        text = obj.get("response")
        if text:
            out = self._event(b'{"text":' + orjson.dumps(text) + self._choice_close)
            self.first_content_emitted = True
        if obj.get("done"):
            reason = self._record_done(obj, False)
            out += self._event(
                b'{"text":"","index":0,"logprobs":null,"finish_reason":' + reason + b"}"
            )
            out += self._usage_event() + _DONE_EVENT
        return out


BAD_LINE = "The node sent a line that is not JSON."


class NdjsonRelay:
    """Ollama's NDJSON stream, split into lines whatever the TCP chunking, through a
    translator that emits OpenAI SSE events."""

    def __init__(self, translator: ChatStreamTranslator | CompletionStreamTranslator):
        self.translator = translator
        self._buffer = b""
        self.streamed = 0  # lines relayed: Ollama streams a token a line

    @property
    def prompt_tokens(self) -> int | None:
        return self.translator.prompt_tokens

    @property
    def completion_tokens(self) -> int | None:
        return self.translator.completion_tokens

    @property
    def timings(self) -> tuple[float, float] | None:
        return self.translator.timings

    @property
    def failed(self) -> GatewayError | None:
        return self.translator.error

    def _line(self, line: bytes) -> bytes:
        if not line.strip() or self.translator.finished:
            return b""
        self.streamed += 1
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            obj = {"error": BAD_LINE}
        if not isinstance(obj, dict):
            obj = {"error": BAD_LINE}
        return self.translator.feed(obj)

    def feed(self, chunk: bytes) -> bytes:
        buf = self._buffer + chunk if self._buffer else chunk
        if b"\n" not in buf:
            self._buffer = buf
            return b""
        lines = buf.split(b"\n")
        self._buffer = lines.pop()
        if len(lines) == 1:
            return self._line(lines[0])
        return b"".join([self._line(line) for line in lines])

    def finish(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        return self._line(rest) + self.translator.finish()


def native_timings(obj: Mapping[str, Any]) -> tuple[float, float] | None:
    """Ollama's own prefill and decode times in seconds (prompt_eval_duration, eval_duration,
    in nanoseconds): the exact split routing learns a node's speeds from. None without both."""
    prompt_ns, eval_ns = obj.get("prompt_eval_duration"), obj.get("eval_duration")
    if not isinstance(prompt_ns, int) or not isinstance(eval_ns, int) or eval_ns <= 0:
        return None
    return max(prompt_ns, 0) / 1e9, eval_ns / 1e9
