"""Sending one event to one channel: the body its kind wants, over HTTP or email. A failure
raises DeliveryError, which the Celery task retries with backoff."""

from __future__ import annotations

import smtplib

import httpx
from django.conf import settings
from django.core.mail import send_mail

from alerts import formats
from alerts.events import AlertEvent
from alerts.models import AlertChannel

TIMEOUT_S = 10.0


class DeliveryError(Exception):
    """Not delivered this time: retried."""


class DeliveryRefused(Exception):
    """The receiver refused it for good (a bad URL, a revoked webhook): not retried."""


# A 4xx says the request is wrong and will stay wrong, except these.
RETRYABLE_4XX = frozenset({408, 425, 429})


def deliver(channel: AlertChannel, event: AlertEvent, suppressed: int = 0) -> None:
    if channel.kind == AlertChannel.Kind.EMAIL:
        subject, text = formats.email(event, suppressed)
        try:
            send_mail(subject, text, settings.DEFAULT_FROM_EMAIL, channel.recipients())
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{channel.name}: mail not sent: {exc}") from None
        return
    body = {
        AlertChannel.Kind.WEBHOOK: formats.webhook,
        AlertChannel.Kind.SLACK: formats.slack,
        AlertChannel.Kind.WECOM: formats.wecom,
    }[AlertChannel.Kind(channel.kind)](event, suppressed)
    try:
        response = httpx.post(channel.target, json=body, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{channel.name}: {exc.__class__.__name__}: {exc}") from None
    if response.status_code >= 300:
        problem = f"{channel.name}: HTTP {response.status_code}: {response.text[:200]}"
        if 400 <= response.status_code < 500 and response.status_code not in RETRYABLE_4XX:
            raise DeliveryRefused(problem)
        raise DeliveryError(problem)
    if channel.kind == AlertChannel.Kind.WECOM:
        # The robot answers 200 with {"errcode": N} when it refuses a message.
        try:
            errcode = response.json().get("errcode", 0)
        except ValueError:
            errcode = 0
        if errcode == -1:  # "system busy"
            raise DeliveryError(f"{channel.name}: WeCom busy: {response.text[:200]}")
        if errcode:
            raise DeliveryRefused(f"{channel.name}: WeCom refused it: {response.text[:200]}")
