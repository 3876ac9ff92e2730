"""Raising an alert: to every enabled channel that wants its kind, after the current
transaction commits, at most one per channel and subject per the channel's interval."""

from __future__ import annotations

import logging

from django.db import transaction

from alerts.events import AlertEvent
from alerts.models import AlertChannel
from clawdbot_site import redis_keys
from clawdbot_site.redis_client import sync_client

log = logging.getLogger(__name__)


def notify(event: AlertEvent) -> int:
    """Queue the event for its channels; returns how many will get it now (the rest hold it
    back, to be counted in their next alert). Never raises: an alert must not break the
    work that raised it."""
    try:
        channels = [c for c in AlertChannel.objects.filter(enabled=True) if c.wants(event.kind)]
        due = [c for c in channels if event.kind == "test" or _due(c, event.subject)]
    except Exception as exc:  # database or Redis down: say it in the log instead
        log.warning("alert not sent (%s): %s", exc, event.title)
        return 0
    if due:
        from alerts.tasks import send_alert  # the task module imports this one

        payload = event.to_dict()
        for channel in due:
            transaction.on_commit(
                lambda pk=channel.pk: send_alert.delay(pk, payload)  # type: ignore[misc]
            )
    return len(due)


def _due(channel: AlertChannel, subject: str) -> bool:
    client = sync_client()
    interval_ms = channel.min_interval_s * 1000
    if interval_ms == 0:
        return True
    if client.set(redis_keys.alert_sent(channel.pk, subject), "1", nx=True, px=interval_ms):
        return True
    held = redis_keys.alert_held(channel.pk, subject)
    with client.pipeline(transaction=False) as pipe:
        pipe.incr(held)
        pipe.expire(held, 86_400)
        pipe.execute()
    return False


def take_held(channel_id: int, subject: str) -> int:
    """The count of alerts held back since the last one sent, reset."""
    value = sync_client().getdel(redis_keys.alert_held(channel_id, subject))
    return int(value or 0)
