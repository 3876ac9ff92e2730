"""The one way to build an OpenAI-shaped error: `{"error": {message, type, param, code}}`."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

# Statuses whose retry by the client cannot help get `x-should-retry: false`.
NOT_RETRYABLE = frozenset({400, 401, 403, 404, 405, 413, 422})


@dataclass
class GatewayError(Exception):
    """An error answered to the client. Raise it anywhere on the request path."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.code or self.type}: {self.message}"

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.param, self.code)

    def sse_event(self) -> bytes:
        """The error as a stream event, for failures after the first byte was sent."""
        return b"data: " + self.body() + b"\n\n"


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


def bad_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", code, param)


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
        "model",
    )


def context_length_exceeded(
    window: int, prompt: int, completion: int, param: str = "messages"
) -> GatewayError:
    if completion:
        detail = (
            f"However, you requested {prompt + completion} tokens ({prompt} in the {param}, "
            f"{completion} in the completion). Please reduce the length of the {param} or "
            "completion."
        )
    else:  # no max_tokens asked for: the prompt alone is too long
        detail = (
            f"However, your {param} resulted in {prompt} tokens. Please reduce the length of "
            f"the {param}."
        )
    return GatewayError(
        400,
        f"This model's maximum context length is {window} tokens. {detail}",
        "invalid_request_error",
        "context_length_exceeded",
        param,
    )


def server_error(
    message: str = "The server had an error while processing your request.",
) -> GatewayError:
    return GatewayError(500, message, "server_error", None, None)


def upstream_unavailable(message: str, retry_after_s: int = 1) -> GatewayError:
    return GatewayError(
        503,
        message,
        "server_error",
        "service_unavailable",
        None,
        {"retry-after": str(retry_after_s)},
    )
