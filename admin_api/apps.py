from __future__ import annotations

from django.apps import AppConfig


class AdminApiConfig(AppConfig):
    name = "admin_api"
    verbose_name = "Management API"

    def ready(self) -> None:
        from admin_api import schema  # noqa: F401  registers the key's OpenAPI scheme
