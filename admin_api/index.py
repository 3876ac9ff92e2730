"""GET /api: what the management API offers, for a human with curl or a browser."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from admin_api.resources import Management

RESOURCES = {
    "nodes": "/api/nodes",
    "profiles": "/api/profiles",
    "deployments": "/api/deployments",
    "keys": "/api/keys",
    "requests": "/api/requests",
    "alert-channels": "/api/alert-channels",
    "readiness": "/api/readiness/runs",
    "schema": "/api/schema",
    "docs": "/api/docs",
}


class ApiIndexView(Management, GenericAPIView):  # type: ignore[misc,type-arg]
    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        return Response({"resources": RESOURCES})
