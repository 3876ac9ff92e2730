"""ASGI entry point. Django is set up before Channels is imported (Channels needs the app
registry). HTTP for the data plane (/v1, /healthz, /readyz, /metrics) goes straight to the
gateway's ASGI app, ahead of Django's handler and its per-request thread hop; everything else
(admin, dashboard, static files) goes to Django."""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clawdbot_site.settings")
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from gateway.app import GatewayApp, owns  # noqa: E402
from wire import daphne_tuning  # noqa: E402

daphne_tuning.apply(idle_timeout_s=settings.CLAWDBOT_HTTP_IDLE_S)

gateway_application = GatewayApp()
django_with_static = ASGIStaticFilesHandler(django_application)


async def http_router(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if owns(scope["path"]):
        await gateway_application(scope, receive, send)
    else:
        await django_with_static(scope, receive, send)


application = ProtocolTypeRouter({"http": http_router})
