from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from alerts.delivery import DeliveryError, deliver
from alerts.events import AlertEvent
from alerts.models import AlertChannel
from alerts.services import take_held

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
def send_alert(channel_id: int, event: dict[str, Any]) -> None:
    """One event to one channel; retried on a failed delivery, dropped quietly when the
    channel was deleted or disabled meanwhile."""
    channel = AlertChannel.objects.filter(pk=channel_id, enabled=True).first()
    if channel is None:
        return
    alert = AlertEvent.from_dict(event)
    held = 0 if alert.kind == "test" else take_held(channel_id, alert.subject)
    deliver(channel, alert, held)
    log.info("alert sent to %s: %s", channel.name, alert.title)
