"""The first management API, under /v1/admin: load a model profile on nodes at runtime and
follow the load. Kept, unchanged, for the scripts written against it; the same operations are
in the /api management REST API (POST /api/profiles/{model}/load, GET /api/tasks/{id}), which
new clients should use. Staff API keys or a staff admin session (see `admin_api.auth`); every
error has the OpenAI shape the /v1 data plane uses."""

from __future__ import annotations

from typing import Any

import orjson
from django.http import RawPostDataException
from django.urls import reverse
from rest_framework.authentication import SessionAuthentication
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from admin_api.auth import IsStaff, StaffApiKeyAuthentication
from admin_api.errors import load_task_or_404, openai_exception_handler
from gateway.errors import bad_request
from gateway.validation import invalid_type, json_type_name
from nodes.load_jobs import start_load
from nodes.placement import resolve_load_request

LOAD_FIELDS = ("model", "nodes")


class AdminApiView(APIView):
    authentication_classes = [StaffApiKeyAuthentication, SessionAuthentication]
    permission_classes = [IsStaff]
    renderer_classes = [JSONRenderer]
    schema = None  # not in the OpenAPI schema: /api documents these operations
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
        return Response(load_task_or_404(task_id))


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


def _body(request: Request) -> bytes:
    try:
        return bytes(request.body)
    except RawPostDataException:
        # Something (a multipart form) consumed the stream already: not a JSON body.
        raise bad_request(
            "Send the request body as JSON (Content-Type: application/json)."
        ) from None
