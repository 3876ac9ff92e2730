from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync(sender: AppConfig, **kwargs: Any) -> None:
    from readiness.runner import sync_catalog

    sync_catalog()


class ReadinessConfig(AppConfig):
    name = "readiness"
    verbose_name = "Readiness checklist"

    def ready(self) -> None:
        # The checks' rows exist from the first migrate on, so the admin lists them.
        post_migrate.connect(_sync, sender=self, dispatch_uid="readiness-catalog")
