from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from alerts import services
from alerts.delivery import DeliveryError, deliver
from alerts.events import AlertEvent
from alerts.models import AlertChannel

log = logging.getLogger(__name__)


@shared_task(
    autoretry_for=(DeliveryError,),
    retry_backoff=5,  # 5 s, 10 s, 20 s, ... with jitter
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=6,
    ignore_result=True,
    soft_time_limit=30,
    time_limit=40,
)
def send_alert(channel_id: int, event: dict[str, Any], held: int = 0) -> None:
    """One event to one channel, with the count of those held back before it; retried on
    a failed delivery (not on a refusal: see delivery.DeliveryRefused), dropped quietly when
    the channel was deleted or disabled meanwhile."""
    channel = AlertChannel.objects.filter(pk=channel_id, enabled=True).first()
    if channel is None:
        return
    alert = AlertEvent.from_dict(event)
    deliver(channel, alert, held)
    log.info("alert sent to %s: %s", channel.name, alert.title)


@shared_task(ignore_result=True, soft_time_limit=30, time_limit=40)
def send_held(channel_id: int, subject: str) -> None:
    """At the end of a channel's interval: the latest alert held back about `subject`, with
    the count of the others, and a new interval."""
    channel = AlertChannel.objects.filter(pk=channel_id, enabled=True).first()
    latest, count = services.take_held(channel_id, subject)
    if channel is None or latest is None:
        return
    services.restart_window(channel, subject)
    services.enqueue(channel_id, latest, count - 1)
