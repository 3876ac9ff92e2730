"""The Celery application shared by the worker, beat and node agents."""

from __future__ import annotations

import logging
import os
from typing import Any

import redis
from celery import Celery, Task
from kombu.exceptions import OperationalError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clawdbot_site.settings")

app = Celery("clawdbot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

log = logging.getLogger(__name__)


def queue_quietly(task: Task, *, args: list[Any], what: str, **options: Any) -> bool:
    """Queue `task`, or, when the broker cannot be reached, log it (naming `what`) and return
    False instead of raising: for follow-up work whose loss must not fail the caller (a
    saved deployment's warm-up, an alert raised by a probe cycle)."""
    try:
        task.apply_async(args=args, **options)
    except (OperationalError, redis.RedisError) as exc:
        log.warning("could not queue %s: %s", what, exc)
        return False
    return True
