from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import models

from alerts.events import KINDS


class AlertChannel(models.Model):
    class Kind(models.TextChoices):
        WEBHOOK = "webhook", "JSON webhook"
        SLACK = "slack", "Slack incoming webhook"
        WECOM = "wecom", "WeCom (企业微信) group robot"
        EMAIL = "email", "Email"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    target = models.CharField(
        max_length=500,
        help_text="The webhook URL (for WeCom: the robot's URL with its key), or for email "
        "the addresses, comma-separated. Sent through Django's email settings.",
    )
    events = models.JSONField(
        default=list,
        blank=True,
        help_text=f"Which events to send: any of {', '.join(KINDS[:-1])}; empty = all.",
    )
    min_interval_s = models.PositiveIntegerField(
        "minimum interval (s)",
        default=300,
        help_text="At most one alert per subject (a node, say) this often; the ones held "
        "back are counted in the next.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    def wants(self, kind: str) -> bool:
        return kind == "test" or not self.events or kind in self.events

    def recipients(self) -> list[str]:
        return [a.strip() for a in self.target.split(",") if a.strip()]

    def clean(self) -> None:
        if self.events is None:  # the admin's emptied field
            self.events = []
        if not isinstance(self.events, list) or any(e not in KINDS[:-1] for e in self.events):
            raise ValidationError({"events": f"A list of: {', '.join(KINDS[:-1])}."})
        if self.kind == self.Kind.EMAIL:
            for address in self.recipients() or [""]:
                try:
                    validate_email(address)
                except ValidationError:
                    raise ValidationError(
                        {"target": f"Not an email address: {address!r}."}
                    ) from None
        else:
            # Not Django's URLValidator: it refuses a bare host name such as
            # http://alertmanager:9093/hook, the usual receiver inside a cluster.
            parts = urlsplit(self.target)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValidationError({"target": "An http(s) URL."})
