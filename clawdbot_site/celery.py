"""The Celery application shared by the worker, beat and node agents."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clawdbot_site.settings")

app = Celery("clawdbot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
