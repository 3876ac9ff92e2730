"""URLs of the management REST API, mounted at /api/. Importing them registers the OpenAPI
extensions too: loaded with the URLconf, not at start-up, so a gateway process that serves only
/v1 never loads DRF's schema machinery. Paths take no trailing slash (like /v1;
one is tolerated). Model ids may contain slashes (`Qwen/Qwen3-32B`), so the profile routes
match the action suffix first."""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from admin_api import resources as api
from admin_api import schema  # noqa: F401  registers the staff key's OpenAPI scheme
from admin_api.errors import not_found
from admin_api.index import ApiIndexView

app_name = "api"

NAME = r"(?P<name>[^/]+)"
MODEL = r"(?P<model_id>.+?)"
PREFIX = r"(?P<prefix>[^/]+)"


def route(pattern: str, view: Any, name: str | None = None) -> URLPattern:
    return re_path(rf"^{pattern}/?$", view, name=name)


COLLECTION = {"get": "list", "post": "create"}
ITEM = {"get": "retrieve", "put": "update", "patch": "partial_update", "delete": "destroy"}


class SchemaView(api.Management, SpectacularAPIView):  # type: ignore[misc]
    pass


class SwaggerView(api.Management, SpectacularSwaggerView):  # type: ignore[misc]
    renderer_classes = SpectacularSwaggerView.renderer_classes


class RedocView(api.Management, SpectacularRedocView):  # type: ignore[misc]
    renderer_classes = SpectacularRedocView.renderer_classes


urlpatterns = [
    re_path(r"^$", ApiIndexView.as_view(), name="index"),
    route("schema", SchemaView.as_view(), "schema"),
    route("docs", SwaggerView.as_view(url_name="api:schema"), "docs"),
    route("redoc", RedocView.as_view(url_name="api:schema"), "redoc"),
    route("nodes", api.NodeViewSet.as_view(COLLECTION), "nodes"),
    *(
        route(f"nodes/{NAME}/{action}", api.NodeViewSet.as_view({"post": action}), f"node-{action}")
        for action in ("drain", "undrain", "probe", "warmup")
    ),
    route(f"nodes/{NAME}/probes", api.NodeViewSet.as_view({"get": "probes"}), "node-probes"),
    route(
        f"nodes/{NAME}/heal-events",
        api.NodeViewSet.as_view({"get": "heal_events"}),
        "node-heal-events",
    ),
    route(f"nodes/{NAME}", api.NodeViewSet.as_view(ITEM), "node"),
    route("profiles", api.ProfileViewSet.as_view(COLLECTION), "profiles"),
    route(f"profiles/{MODEL}/load", api.ProfileViewSet.as_view({"post": "load"}), "profile-load"),
    route(f"profiles/{MODEL}", api.ProfileViewSet.as_view(ITEM), "profile"),
    route("deployments", api.DeploymentViewSet.as_view(COLLECTION), "deployments"),
    route(r"deployments/(?P<pk>\d+)", api.DeploymentViewSet.as_view(ITEM), "deployment"),
    route("keys", api.KeyViewSet.as_view(COLLECTION), "keys"),
    route(f"keys/{PREFIX}/revoke", api.KeyViewSet.as_view({"post": "revoke"}), "key-revoke"),
    route(
        f"keys/{PREFIX}",
        api.KeyViewSet.as_view(
            {"get": "retrieve", "put": "update", "patch": "partial_update", "delete": "revoke"}
        ),
        "key",
    ),
    route("requests", api.RequestLogViewSet.as_view({"get": "list"}), "requests"),
    route(
        r"requests/(?P<request_id>[^/]+)",
        api.RequestLogViewSet.as_view({"get": "retrieve"}),
        "request",
    ),
    route("alert-channels", api.AlertChannelViewSet.as_view(COLLECTION), "alert-channels"),
    route(
        f"alert-channels/{NAME}/test",
        api.AlertChannelViewSet.as_view({"post": "test"}),
        "alert-channel-test",
    ),
    route(f"alert-channels/{NAME}", api.AlertChannelViewSet.as_view(ITEM), "alert-channel"),
    route("readiness/runs", api.ReadinessRunViewSet.as_view(COLLECTION), "readiness-runs"),
    route(
        r"readiness/runs/(?P<pk>\d+)",
        api.ReadinessRunViewSet.as_view({"get": "retrieve"}),
        "readiness-run",
    ),
    route(
        "readiness/checks", api.ReadinessCheckViewSet.as_view({"get": "list"}), "readiness-checks"
    ),
    route(
        r"readiness/checks/(?P<key>[^/]+)",
        api.ReadinessCheckViewSet.as_view(
            {"get": "retrieve", "put": "update", "patch": "partial_update"}
        ),
        "readiness-check",
    ),
    route(r"tasks/(?P<task_id>[^/]+)", api.TaskViewSet.as_view({"get": "retrieve"}), "task"),
    # Last: anything else under /api/ is a JSON 404, not Django's HTML page.
    re_path(r"^(?P<path>.*)$", not_found),
]
