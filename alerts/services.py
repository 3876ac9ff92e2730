"""Raising an alert: to every enabled channel that wants its kind, after the current
transaction commits. At most one alert per channel and subject per the channel's interval;
what comes meanwhile is held back, and when the interval ends the latest of it is sent with
the count of the others (so a node that goes DEGRADED and then DOWN within the interval still
ends with DOWN in the channel, and one that recovers, with READY)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from django.db import transaction

from alerts.events import AlertEvent
from alerts.models import AlertChannel
from clawdbot_site import redis_keys
from clawdbot_site.celery import queue_quietly
from clawdbot_site.redis_client import sync_client

log = logging.getLogger(__name__)
HELD_TTL_S = 86_400


def notify(event: AlertEvent) -> int:
    """Queue the event for its channels; returns how many will get it now (the others hold
    it until their interval ends). Never raises: an alert must not break the work that
    raised it (a probe cycle, a heal)."""
    try:
        channels = [c for c in AlertChannel.objects.filter(enabled=True) if c.wants(event.kind)]
        due = [c for c in channels if event.kind == "test" or _due(c, event)]
    except Exception as exc:  # the database or Redis is down: the log says it instead
        log.warning("alert not sent (%s): %s", exc, event.title)
        return 0
    for channel in due:
        transaction.on_commit(
            lambda pk=channel.pk: enqueue(pk, event.to_dict(), 0)  # type: ignore[misc]
        )
    return len(due)


def enqueue(channel_id: int, event: dict[str, Any], held: int) -> None:
    from alerts.tasks import send_alert  # the task module imports this one

    queue_quietly(send_alert, args=[channel_id, event, held], what=f"alert {event.get('title')}")


def _due(channel: AlertChannel, event: AlertEvent) -> bool:
    """True when the channel may send now; otherwise the event is held, and one send of the
    latest held event is scheduled for the end of the interval."""
    interval_ms = channel.min_interval_s * 1000
    if interval_ms == 0:
        return True
    client = sync_client()
    sent = redis_keys.alert_sent(channel.pk, event.subject)
    if client.set(sent, "1", nx=True, px=interval_ms):
        return True
    held = redis_keys.alert_held(channel.pk, event.subject)
    with client.pipeline(transaction=False) as pipe:
        pipe.hincrby(held, "count", 1)
        pipe.hset(held, "latest", orjson.dumps(event.to_dict()))
        pipe.expire(held, HELD_TTL_S)
        pipe.hsetnx(held, "scheduled", "1")
        pipe.pttl(sent)
        *_, first, left_ms = pipe.execute()
    if first:  # the first held in this interval: send what is latest when it ends
        countdown = max(left_ms, 0) / 1000
        transaction.on_commit(
            lambda: enqueue_held(channel.pk, event.subject, countdown)  # type: ignore[misc]
        )
    return False


def enqueue_held(channel_id: int, subject: str, countdown: float) -> None:
    from alerts.tasks import send_held

    queue_quietly(
        send_held,
        args=[channel_id, subject],
        what=f"the held alerts of {subject}",
        countdown=countdown,
    )


def take_held(channel_id: int, subject: str) -> tuple[dict[str, Any] | None, int]:
    """The latest event held back and how many were, reset; (None, 0) when none was."""
    client = sync_client()
    with client.pipeline(transaction=True) as pipe:
        key = redis_keys.alert_held(channel_id, subject)
        pipe.hgetall(key)
        pipe.delete(key)
        fields, _ = pipe.execute()
    if not fields or b"latest" not in fields:
        return None, 0
    return orjson.loads(fields[b"latest"]), int(fields.get(b"count", 0))


def restart_window(channel: AlertChannel, subject: str) -> None:
    """The held alerts were just sent: a new interval begins."""
    if channel.min_interval_s:
        sync_client().set(
            redis_keys.alert_sent(channel.pk, subject), "1", px=channel.min_interval_s * 1000
        )
