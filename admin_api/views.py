"""The management API under /v1/admin: load a model profile on nodes at runtime and follow the
load. Staff API keys or a staff admin session (see `admin_api.auth`). Every answer, errors
included, is JSON, and every error has the OpenAI shape the /v1 data plane uses."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import redis
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, RawPostDataException
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from kombu.exceptions import OperationalError
from rest_framework import exceptions
from rest_framework.authentication import SessionAuthentication
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView, set_rollback

from admin_api.auth import IsStaff, StaffApiKeyAuthentication
from gateway.errors import NOT_RETRYABLE, GatewayError, bad_request, server_error
from gateway.validation import invalid_type, json_type_name
from nodes.load_jobs import load_status, start_load
from nodes.placement import LoadRequestError, resolve_load_request

log = logging.getLogger(__name__)

LOAD_FIELDS = ("model", "nodes")


class AdminApiView(APIView):
    authentication_classes = [StaffApiKeyAuthentication, SessionAuthentication]
    permission_classes = [IsStaff]
    renderer_classes = [JSONRenderer]
    # Bodies are read as JSON whatever their Content-Type, like the data plane does, so a
    # `curl -d '{…}'` without a header works.
    parser_classes: list[Any] = []

    def get_exception_handler(self) -> Any:
        return openai_exception_handler


class LoadModelView(AdminApiView):
    def post(self, request: Request) -> Response:
        model, node_names = parse_load_body(_body(request))
        profile, nodes = resolve_load_request(model, node_names)
        task_id = start_load(profile=profile, nodes=nodes)
        status_url = reverse("admin_api:task-status", args=[task_id])
        return Response(
            {
                "task_id": task_id,
                "status_url": status_url,
                "model": profile.model_id,
                "nodes": [node.name for node in nodes],
            },
            status=202,
            headers={"Location": status_url},
        )


class TaskStatusView(AdminApiView):
    def get(self, request: Request, task_id: str) -> Response:
        status = load_status(task_id)
        if status is None:
            raise GatewayError(
                404,
                f"There is no load task `{task_id}` (finished tasks are kept for an hour).",
                code="task_not_found",
            )
        return Response(status)


@csrf_exempt  # it answers 404 to every method; a CSRF 403 would only hide that
def not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    return error_response(
        GatewayError(
            404,
            f"Unknown request URL: {request.method} {request.path}.",
            code="not_found",
        )
    )


def parse_load_body(body: bytes) -> tuple[str, list[str] | None]:
    """(model, node names or None for "every node that fits") from a load request's body."""
    if not body.strip():
        raise bad_request(
            'The request body is empty; send a JSON object such as {"model": "qwen3-32b"}.'
        )
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise bad_request(
            f"The request body must be a JSON object, not {json_type_name(data)}.",
            None,
            "invalid_type",
        )
    for name in data:
        if name not in LOAD_FIELDS:
            raise bad_request(
                f"Unrecognized request argument supplied: {name}. "
                f"Expected {' and '.join(LOAD_FIELDS)}.",
                name,
                "unknown_parameter",
            )
    model = data.get("model")
    if model is None:
        raise bad_request(
            "Missing required parameter: 'model'.", "model", "missing_required_parameter"
        )
    if not isinstance(model, str):
        raise invalid_type("model", "a string", model)
    if not model.strip():
        raise bad_request("Invalid value for 'model': it is empty.", "model", "invalid_value")
    nodes = data.get("nodes")
    if nodes is None:
        return model, None
    if not isinstance(nodes, list):
        raise invalid_type("nodes", "an array of node names", nodes)
    for index, name in enumerate(nodes):
        if not isinstance(name, str) or not name:
            raise invalid_type(f"nodes[{index}]", "a node name", name)
    if not nodes:
        raise bad_request(
            "Invalid value for 'nodes': name at least one node, or leave 'nodes' out to load "
            "on every enabled node that serves the model or can hold it.",
            "nodes",
            "invalid_value",
        )
    return model, nodes


def openai_exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse:
    """DRF's exception handler for these views only: every failure as an OpenAI error."""
    set_rollback()
    return error_response(_as_error(exc, context))


def error_response(error: GatewayError) -> HttpResponse:
    response = HttpResponse(error.body(), status=error.status, content_type="application/json")
    for name, value in error.headers.items():
        response[name] = value
    if error.status in NOT_RETRYABLE:
        response["x-should-retry"] = "false"
    return response


def _as_error(exc: Exception, context: dict[str, Any]) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, LoadRequestError):
        return GatewayError(exc.status, exc.message, code=exc.code, param=exc.param)
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


def _body(request: Request) -> bytes:
    try:
        return bytes(request.body)
    except RawPostDataException:
        # Something (a multipart form) consumed the stream already: not a JSON body.
        raise bad_request(
            "Send the request body as JSON (Content-Type: application/json)."
        ) from None
