"""Every failure of the management APIs (/api and /v1/admin) as an OpenAI-shaped error, the
shape the /v1 data plane uses, so one client-side error handler serves both:

    {"error": {"message": "...", "type": "...", "param": "...", "code": "..."}}

A validation failure names its first bad field in `param` and lists every bad field in an
extra `fields` object ({"name": ["why", ...]}), so a form can mark all of them at once."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import redis
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from kombu.exceptions import OperationalError
from rest_framework import exceptions
from rest_framework.views import set_rollback

from gateway.errors import NOT_RETRYABLE, GatewayError, server_error
from nodes.placement import LoadRequestError

log = logging.getLogger(__name__)


class FieldErrors(GatewayError):
    """A 400 that carries every bad field, not only the first."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        first = next(iter(fields), None)
        if first is None:
            message = "The request is not valid."
        elif first == "non_field_errors":
            message = fields[first][0]
            first = None
        else:
            message = f"Invalid value for '{first}': {fields[first][0]}"
        super().__init__(400, message, "invalid_request_error", "invalid_value", first)
        self.fields = fields

    def body(self) -> bytes:
        error = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
            "fields": self.fields,
        }
        return orjson.dumps({"error": error})


def load_task_or_404(task_id: str) -> Any:
    """A load task's status (both management APIs answer it), or the 404 that says why not."""
    from nodes.load_jobs import load_status

    status = load_status(task_id)
    if status is None:
        raise GatewayError(
            404,
            f"There is no load task `{task_id}` (finished tasks are kept for an hour).",
            code="task_not_found",
        )
    return status


def openai_exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse:
    """DRF's exception handler for the management views."""
    set_rollback()
    return error_response(as_error(exc, context))


def error_response(error: GatewayError) -> HttpResponse:
    response = HttpResponse(error.body(), status=error.status, content_type="application/json")
    for name, value in error.headers.items():
        response[name] = value
    if error.status in NOT_RETRYABLE:
        response["x-should-retry"] = "false"
    return response


@csrf_exempt  # it answers 404 to every method; a CSRF 403 would only hide that
def not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    return error_response(
        GatewayError(
            404, f"Unknown request URL: {request.method} {request.path}.", code="not_found"
        )
    )


def flatten_detail(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail ({"a": ["x"], "b": {"c": ["y"]}, "d": [{}, {"e": ["z"]}]})
    as flat dotted paths ({"a": ["x"], "b.c": ["y"], "d[1].e": ["z"]})."""
    flat: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for name, value in detail.items():
            path = f"{prefix}.{name}" if prefix else str(name)
            flat.update(flatten_detail(value, path))
    elif isinstance(detail, list) and any(isinstance(item, dict | list) for item in detail):
        for index, value in enumerate(detail):
            flat.update(flatten_detail(value, f"{prefix}[{index}]"))
    elif isinstance(detail, list):
        flat[prefix or "non_field_errors"] = [str(item) for item in detail]
    else:
        flat[prefix or "non_field_errors"] = [str(detail)]
    return {path: messages for path, messages in flat.items() if messages}


def as_error(exc: Exception, context: dict[str, Any]) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, LoadRequestError):
        return GatewayError(exc.status, exc.message, code=exc.code, param=exc.param)
    if isinstance(exc, exceptions.ValidationError):
        return FieldErrors(flatten_detail(exc.detail))
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            return FieldErrors({name: list(msgs) for name, msgs in exc.message_dict.items()})
        return FieldErrors({"non_field_errors": list(exc.messages)})
    if isinstance(exc, IntegrityError):
        # A concurrent write won a uniqueness race the serializer had checked: a conflict.
        return GatewayError(
            409, "The change conflicts with another one; reload and retry.", code="conflict"
        )
    if isinstance(exc, Http404):
        return GatewayError(404, str(exc) or "Not found.", code="not_found")
    if isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        headers = {"WWW-Authenticate": exc.auth_header} if getattr(exc, "auth_header", "") else {}
        message = str(exc.detail)
        if isinstance(exc, exceptions.NotAuthenticated):
            message = (
                "You didn't provide an API key. Send a staff key as 'Authorization: Bearer "
                "ck-…' (clawdbot apikey create --staff), or log in to the admin as staff."
            )
        # DRF gives 403 when no authenticator names a scheme; ours always does, so 401.
        return GatewayError(exc.status_code, message, code="invalid_api_key", headers=headers)
    if isinstance(exc, exceptions.PermissionDenied):
        return GatewayError(403, str(exc.detail), code="permission_denied")
    if isinstance(exc, exceptions.MethodNotAllowed):
        request, view = context.get("request"), context.get("view")
        allowed = [m for m in getattr(view, "allowed_methods", []) if m != "OPTIONS"]
        path = request.path if request is not None else "this URL"
        return GatewayError(
            405,
            f"Method {getattr(request, 'method', '?')} is not allowed on {path}; "
            f"use {' or '.join(allowed)}.",
            code="method_not_allowed",
        )
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return GatewayError(
            415,
            f"{exc.detail} Send JSON (Content-Type: application/json).",
            code="unsupported_media_type",
        )
    if isinstance(exc, exceptions.ParseError):
        return GatewayError(
            400, f"The request body is not valid JSON: {exc.detail}", code="invalid_json"
        )
    if isinstance(exc, exceptions.Throttled):
        return GatewayError(429, str(exc.detail), code="rate_limit_exceeded")
    if isinstance(exc, exceptions.APIException):
        detail = exc.detail if isinstance(exc.detail, str) else orjson.dumps(exc.detail).decode()
        return GatewayError(exc.status_code, str(detail), code=exc.default_code)
    if isinstance(exc, redis.RedisError | OperationalError):
        log.warning("management API: Redis is not reachable: %s", exc)
        return GatewayError(
            503,
            "Redis (the task queue) is not reachable; try again shortly.",
            "server_error",
            "service_unavailable",
            headers={"Retry-After": "5"},
        )
    # The traceback goes to the log, never to the client.
    log.exception("management API: unexpected error", exc_info=exc)
    return server_error()
