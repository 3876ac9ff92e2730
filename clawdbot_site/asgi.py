"""ASGI entry point. Django is set up before Channels is imported (Channels needs the app
registry). HTTP for the data plane (/v1, /healthz, /readyz, /metrics) goes straight to the
gateway's ASGI app, ahead of Django's handler and its per-request thread hop; everything else
(admin, dashboard, static files) goes to Django. WebSocket handshakes reach the application
on every path but the data plane's: the console's live feed (/ws/console/, for staff
sessions from an allowed host) is served, any other is refused (see websocket_refused)."""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clawdbot_site.settings")
django_application = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.exceptions import SuspiciousOperation  # noqa: E402
from django.core.handlers.exception import response_for_exception  # noqa: E402
from django.http import FileResponse, HttpRequest, HttpResponse  # noqa: E402
from django.urls import re_path  # noqa: E402

from dashboard.routing import websocket_urlpatterns  # noqa: E402
from gateway.app import GatewayApp, owns  # noqa: E402
from wire import daphne_tuning  # noqa: E402

# The data plane speaks HTTP only: a WebSocket handshake there is answered as the HTTP request
# it also is (a 404 or 405 in the OpenAI shape), not handed to daphne's WebSocket protocol.
daphne_tuning.apply(idle_timeout_s=settings.CLAWDBOT_HTTP_IDLE_S, http_only=owns)


class StaticFilesHandler(ASGIStaticFilesHandler):
    def serve(self, request: HttpRequest) -> HttpResponse | FileResponse:
        # A path that climbs out of the static roots (/static/../../etc/passwd, in any
        # escaping) raises SuspiciousFileOperation, which Django's handler lets out as a 500:
        # answer it as Django answers a suspicious operation anywhere else, a 400.
        try:
            return super().serve(request)
        except SuspiciousOperation as exc:
            return response_for_exception(request, exc)


gateway_application = GatewayApp()
django_with_static = StaticFilesHandler(django_application)


async def http_router(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if owns(scope["path"]):
        await gateway_application(scope, receive, send)
    else:
        await django_with_static(scope, receive, send)


async def websocket_refused(scope: dict[str, Any], receive: Any, send: Any) -> None:
    # No consumer on this path: the handshake is closed before it is accepted, which daphne
    # answers with a 403. (On the data plane's paths none arrives under daphne: see above.)
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close"})


websocket_router = AllowedHostsOriginValidator(
    AuthMiddlewareStack(
        URLRouter([*websocket_urlpatterns, re_path(r"", websocket_refused)])  # type: ignore[arg-type]
    )
)

application = ProtocolTypeRouter({"http": http_router, "websocket": websocket_router})
