"""Validation of incoming OpenAI request bodies (already JSON-parsed by the caller).

Each ``validate_*`` function either returns a frozen request object holding what the gateway
needs to route, admit and translate the call, or raises ``GatewayError`` (400) naming the
offending ``param`` the way OpenAI does (``messages[2].content``). The raw body is kept for
OpenAI-compatible upstreams, which get it nearly unchanged.

Validation is deliberately about *shape*, not about what a given upstream supports: a field an
Ollama node cannot honour (``tool_choice: "required"``, ``echo``) is rejected by the Ollama
translation, because a vLLM node may well support it.

``null`` is treated as "absent" for every optional field, as the OpenAI API does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import GatewayError, bad_request

ROLES = ("system", "developer", "user", "assistant", "tool")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
ENCODING_FORMATS = ("float", "base64")
MAX_STOP_SEQUENCES = 4
MAX_TOP_LOGPROBS = 20

# Which content-part types each role may send; OpenAI accepts images from users only.
_PART_TYPES: dict[str, tuple[str, ...]] = {
    "system": ("text",),
    "developer": ("text",),
    "user": ("text", "image_url"),
    "assistant": ("text", "refusal"),
    "tool": ("text",),
}


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling fields shared by chat and text completions; ``None`` means "not sent"."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    # From max_completion_tokens when sent, else max_tokens; None when neither was sent.
    max_tokens: int | None
    # The field the client used, so a clamped value can be written back where it came from.
    max_tokens_field: str | None
    sampling: Sampling
    tools: list[dict[str, Any]] | None
    tool_choice: str | dict[str, Any] | None
    response_format: dict[str, Any] | None
    reasoning_effort: str | None
    logprobs: bool
    top_logprobs: int | None
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    model: str
    prompt: str | list[str]
    suffix: str | None
    stream: bool
    include_usage: bool
    max_tokens: int | None
    echo: bool
    logprobs: int | None
    sampling: Sampling
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    model: str
    input: str | list[str]
    encoding_format: str
    dimensions: int | None
    raw: dict[str, Any]


# --- small typed readers --------------------------------------------------------------------


def json_type_name(value: object) -> str:
    """How an error message names the JSON type a client sent."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string" if value else "an empty string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def shown(value: object) -> str:
    """A client's value as an error message quotes it: short strings and numbers as they
    are, anything else by its JSON type (an array or object may be huge, or nested deeper
    than repr can go)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 64 else repr(value[:64]) + "…"
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    return "an " + json_type_name(value)


MAX_JSON_DEPTH = 128  # orjson writes no deeper than 254 levels: a node could not be sent more


def parse_body(body: bytes) -> Any:
    """The request body as JSON, or a 400 saying why not."""
    if not body.strip():
        raise bad_request("The request body is empty; send a JSON object.")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.") from None
    # A body cannot nest deeper than it has brackets: the walk is for the rare large one.
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and _too_deep(value):
        raise bad_request(
            f"The request body nests JSON more than {MAX_JSON_DEPTH} levels deep.",
            None,
            "invalid_value",
        )
    return value


def _too_deep(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def invalid_type(param: str, expected: str, value: object) -> GatewayError:
    return bad_request(
        f"Invalid type for '{param}': expected {expected}, but got {json_type_name(value)}.",
        param,
        "invalid_type",
    )


def _invalid_value(param: str, detail: str) -> GatewayError:
    return bad_request(f"Invalid value for '{param}': {detail}", param, "invalid_value")


def _missing(param: str) -> GatewayError:
    return bad_request(
        f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
    )


def _is_int(value: object) -> bool:
    # bool is a subclass of int, but `true` is not a valid token count.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bool(body: dict[str, Any], key: str, default: bool = False) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid_type(key, "a boolean", value)
    return value


def _int(
    body: dict[str, Any], key: str, *, minimum: int | None = None, maximum: int | None = None
) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not _is_int(value):
        raise invalid_type(key, "an integer", value)
    if minimum is not None and value < minimum:
        raise _invalid_value(key, f"{value} is less than the minimum of {minimum}.")
    if maximum is not None and value > maximum:
        raise _invalid_value(key, f"{value} is greater than the maximum of {maximum}.")
    return int(value)


def _number(body: dict[str, Any], key: str, minimum: float, maximum: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if not _is_number(value):
        raise invalid_type(key, "a number", value)
    if not minimum <= value <= maximum:
        raise _invalid_value(key, f"{value} is outside the range {minimum:g} to {maximum:g}.")
    return float(value)


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise bad_request(
            "You must provide a model parameter.", "model", "missing_required_parameter"
        )
    if not isinstance(model, str):
        raise invalid_type("model", "a string", model)
    if not model.strip():
        raise _invalid_value("model", "the model name must not be empty.")
    return model


def _object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request(
            f"The request body must be a JSON object, not {json_type_name(body)}.",
            None,
            "invalid_body",
        )
    return body


def _stream_and_usage(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = _bool(body, "stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not isinstance(options, dict):
        raise invalid_type("stream_options", "an object", options)
    if not stream:
        raise bad_request(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
            "invalid_value",
        )
    include = options.get("include_usage")
    if include is None:
        return stream, False
    if not isinstance(include, bool):
        raise invalid_type("stream_options.include_usage", "a boolean", include)
    return stream, include


def _n(body: dict[str, Any]) -> None:
    n = _int(body, "n", minimum=1)
    if n is not None and n > 1:
        # Every upstream answers one choice per request; fanning out would multiply GPU load
        # behind the client's back, so the gateway says no instead.
        raise bad_request(
            "Only n=1 is supported: this gateway returns one choice per request. "
            "Send several requests to get several completions.",
            "n",
            "unsupported_value",
        )


def _stop(body: dict[str, Any]) -> tuple[str, ...] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        return (stop,)
    if not isinstance(stop, list):
        raise invalid_type("stop", "a string or an array of strings", stop)
    if len(stop) > MAX_STOP_SEQUENCES:
        raise _invalid_value(
            "stop", f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed, got {len(stop)}."
        )
    for i, item in enumerate(stop):
        if not isinstance(item, str):
            raise invalid_type(f"stop[{i}]", "a string", item)
    return tuple(stop) or None


def _sampling(body: dict[str, Any]) -> Sampling:
    return Sampling(
        temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 0.0, 1.0),
        # top_k and min_p are vLLM/Ollama extensions that self-hosting users rely on.
        top_k=_int(body, "top_k", minimum=-1),
        min_p=_number(body, "min_p", 0.0, 1.0),
        seed=_int(body, "seed"),
        presence_penalty=_number(body, "presence_penalty", -2.0, 2.0),
        frequency_penalty=_number(body, "frequency_penalty", -2.0, 2.0),
        stop=_stop(body),
    )


def _text_inputs(body: dict[str, Any], key: str, *, allow_empty: bool) -> str | list[str]:
    value = body.get(key)
    if value is None:
        raise _missing(key)
    if isinstance(value, str):
        if not value and not allow_empty:
            raise _invalid_value(key, "the input must not be an empty string.")
        return value
    if not isinstance(value, list):
        raise invalid_type(key, "a string or an array of strings", value)
    if not value:
        raise _invalid_value(key, "the array must not be empty.")
    for i, item in enumerate(value):
        if isinstance(item, str):
            if not item and not allow_empty:
                raise _invalid_value(f"{key}[{i}]", "the input must not be an empty string.")
            continue
        if _is_int(item) or isinstance(item, list):
            # Token ids only make sense against the exact tokenizer of the node's model, which
            # the gateway cannot check, so they are refused rather than passed on blindly.
            raise bad_request(
                f"Token arrays are not supported in '{key}': send text instead.",
                key,
                "unsupported_value",
            )
        raise invalid_type(f"{key}[{i}]", "a string", item)
    return value


# --- chat -----------------------------------------------------------------------------------


def _content_parts(parts: list[Any], role: str, param: str) -> None:
    if not parts:
        raise _invalid_value(param, "the array of content parts must not be empty.")
    allowed = _PART_TYPES[role]
    for j, part in enumerate(parts):
        where = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise invalid_type(where, "an object", part)
        kind = part.get("type")
        if kind not in allowed:
            raise _invalid_value(
                f"{where}.type",
                f"expected one of {', '.join(repr(a) for a in allowed)} for a {role} message, "
                f"got {shown(kind)}.",
            )
        if kind == "text" or kind == "refusal":
            if not isinstance(part.get(kind), str):
                raise invalid_type(f"{where}.{kind}", "a string", part.get(kind))
        else:
            image = part.get("image_url")
            if not isinstance(image, dict):
                raise invalid_type(f"{where}.image_url", "an object", image)
            url = image.get("url")
            if not isinstance(url, str) or not url:
                raise invalid_type(f"{where}.image_url.url", "a non-empty string", url)


def _tool_calls(calls: object, param: str) -> bool:
    """Validate an assistant's ``tool_calls``; True when there is at least one."""
    if calls is None:
        return False
    if not isinstance(calls, list):
        raise invalid_type(param, "an array", calls)
    for k, call in enumerate(calls):
        where = f"{param}[{k}]"
        if not isinstance(call, dict):
            raise invalid_type(where, "an object", call)
        if not isinstance(call.get("id"), str):
            raise invalid_type(f"{where}.id", "a string", call.get("id"))
        if call.get("type", "function") != "function":
            raise _invalid_value(f"{where}.type", "only 'function' tool calls are supported.")
        function = call.get("function")
        if not isinstance(function, dict):
            raise invalid_type(f"{where}.function", "an object", function)
        if not isinstance(function.get("name"), str):
            raise invalid_type(f"{where}.function.name", "a string", function.get("name"))
        if not isinstance(function.get("arguments"), str):
            raise invalid_type(
                f"{where}.function.arguments", "a JSON string", function.get("arguments")
            )
    return bool(calls)


def _message(message: object, i: int) -> None:
    param = f"messages[{i}]"
    if not isinstance(message, dict):
        raise invalid_type(param, "an object", message)
    role = message.get("role")
    if not isinstance(role, str) or role not in _PART_TYPES:
        if role is None:
            raise _missing(f"{param}.role")
        raise _invalid_value(
            f"{param}.role",
            f"expected one of {', '.join(repr(r) for r in ROLES)}, got {shown(role)}.",
        )
    has_tool_calls = False
    if role == "assistant":
        has_tool_calls = _tool_calls(message.get("tool_calls"), f"{param}.tool_calls")
    content = message.get("content")
    if content is None:
        # OpenAI lets an assistant turn that only calls tools leave content out.
        if not has_tool_calls:
            raise _missing(f"{param}.content")
    elif isinstance(content, list):
        _content_parts(content, role, f"{param}.content")
    elif not isinstance(content, str):
        raise invalid_type(f"{param}.content", "a string or an array of content parts", content)
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise invalid_type(f"{param}.tool_call_id", "a string", message.get("tool_call_id"))
    name = message.get("name")
    if name is not None and not isinstance(name, str):
        raise invalid_type(f"{param}.name", "a string", name)


def _tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise invalid_type("tools", "an array", tools)
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise invalid_type(where, "an object", tool)
        if tool.get("type") != "function":
            raise _invalid_value(f"{where}.type", "only 'function' tools are supported.")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise invalid_type(f"{where}.function", "an object", function)
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise invalid_type(f"{where}.function.name", "a non-empty string", name)
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            raise invalid_type(f"{where}.function.description", "a string", description)
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise invalid_type(f"{where}.function.parameters", "an object", parameters)
    return tools or None


def _tool_choice(body: dict[str, Any]) -> str | dict[str, Any] | None:
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise _invalid_value(
                "tool_choice",
                f"expected 'none', 'auto', 'required' or an object, got {shown(choice)}.",
            )
        return choice
    if not isinstance(choice, dict):
        raise invalid_type("tool_choice", "a string or an object", choice)
    function = choice.get("function")
    if (
        choice.get("type") != "function"
        or not isinstance(function, dict)
        or not isinstance(function.get("name"), str)
    ):
        raise _invalid_value(
            "tool_choice",
            'a named tool choice looks like {"type": "function", "function": {"name": "..."}}.',
        )
    return choice


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise invalid_type("response_format", "an object", fmt)
    kind = fmt.get("type")
    if kind not in RESPONSE_FORMATS:
        raise _invalid_value(
            "response_format.type",
            f"expected one of {', '.join(repr(k) for k in RESPONSE_FORMATS)}, got {shown(kind)}.",
        )
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict):
            raise invalid_type("response_format.json_schema", "an object", spec)
        if not isinstance(spec.get("schema"), dict):
            raise invalid_type(
                "response_format.json_schema.schema", "a JSON Schema object", spec.get("schema")
            )
    return fmt


def _max_tokens(body: dict[str, Any]) -> tuple[int | None, str | None]:
    legacy = _int(body, "max_tokens", minimum=1)
    preferred = _int(body, "max_completion_tokens", minimum=1)
    if preferred is not None:
        return preferred, "max_completion_tokens"
    if legacy is not None:
        return legacy, "max_tokens"
    return None, None


def validate_chat(body: object) -> ChatRequest:
    body = _object(body)
    model = _model(body)
    messages = body.get("messages")
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list):
        raise invalid_type("messages", "an array", messages)
    if not messages:
        raise _invalid_value("messages", "the array must contain at least one message.")
    for i, message in enumerate(messages):
        _message(message, i)
    _n(body)
    stream, include_usage = _stream_and_usage(body)
    max_tokens, max_tokens_field = _max_tokens(body)
    reasoning_effort = body.get("reasoning_effort")
    if reasoning_effort is not None and reasoning_effort not in REASONING_EFFORTS:
        raise _invalid_value(
            "reasoning_effort",
            f"expected one of {', '.join(repr(r) for r in REASONING_EFFORTS)}, "
            f"got {shown(reasoning_effort)}.",
        )
    logprobs = _bool(body, "logprobs")
    top_logprobs = _int(body, "top_logprobs", minimum=0, maximum=MAX_TOP_LOGPROBS)
    if top_logprobs is not None and not logprobs:
        raise _invalid_value("top_logprobs", "'logprobs' must be true when top_logprobs is set.")
    _bool(body, "parallel_tool_calls", default=True)
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        max_tokens_field=max_tokens_field,
        sampling=_sampling(body),
        tools=_tools(body),
        tool_choice=_tool_choice(body),
        response_format=_response_format(body),
        reasoning_effort=reasoning_effort,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        raw=body,
    )


# --- text completions and embeddings ----------------------------------------------------------


def validate_completion(body: object) -> CompletionRequest:
    body = _object(body)
    model = _model(body)
    # An empty prompt is valid OpenAI input (the model starts from nothing).
    prompt = _text_inputs(body, "prompt", allow_empty=True)
    suffix = body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise invalid_type("suffix", "a string", suffix)
    _n(body)
    best_of = _int(body, "best_of", minimum=1)
    if best_of is not None and best_of > 1:
        raise bad_request(
            "Only best_of=1 is supported: this gateway returns one completion per request.",
            "best_of",
            "unsupported_value",
        )
    stream, include_usage = _stream_and_usage(body)
    return CompletionRequest(
        model=model,
        prompt=prompt,
        suffix=suffix,
        stream=stream,
        include_usage=include_usage,
        max_tokens=_int(body, "max_tokens", minimum=1),
        echo=_bool(body, "echo"),
        logprobs=_int(body, "logprobs", minimum=0, maximum=5),
        sampling=_sampling(body),
        raw=body,
    )


def validate_embedding(body: object) -> EmbeddingRequest:
    body = _object(body)
    model = _model(body)
    inputs = _text_inputs(body, "input", allow_empty=False)
    encoding_format = body.get("encoding_format")
    if encoding_format is None:
        encoding_format = "float"
    elif encoding_format not in ENCODING_FORMATS:
        raise _invalid_value(
            "encoding_format", f"expected 'float' or 'base64', got {shown(encoding_format)}."
        )
    return EmbeddingRequest(
        model=model,
        input=inputs,
        encoding_format=encoding_format,
        dimensions=_int(body, "dimensions", minimum=1),
        raw=body,
    )
