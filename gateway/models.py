"""Gateway API keys. Writes go through `gateway.services`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from gateway.tiers import TIER_CHOICES
from nodes.models import ModelProfile


class ApiKey(models.Model):
    name = models.CharField(max_length=100, help_text="What the key is for, e.g. 'support-bot'.")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="api_keys",
    )
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    digest = models.CharField(max_length=64, editable=False)
    allowed_profiles = models.ManyToManyField(
        ModelProfile,
        blank=True,
        related_name="api_keys",
        verbose_name="allowed models",
        help_text="Empty = every model.",
    )
    rpm_limit = models.PositiveIntegerField(
        "requests/minute",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Empty = unlimited.",
    )
    tpm_limit = models.PositiveIntegerField(
        "tokens/minute",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Prompt + completion tokens; empty = unlimited.",
    )
    is_staff_key = models.BooleanField(
        "staff key",
        default=False,
        help_text="May call the management endpoints under /v1/admin.",
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "prefix"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} (ck-{self.prefix}-…)"

    @property
    def masked(self) -> str:
        return f"ck-{self.prefix}-…"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    def status(self, now: datetime | None = None) -> str:
        if self.is_revoked:
            return "revoked"
        if self.is_expired(now):
            return "expired"
        return "active"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "prefix": self.prefix,
            "owner": self.owner.get_username() if self.owner else None,
            "models": sorted(p.model_id for p in self.allowed_profiles.all()),
            "rpm_limit": self.rpm_limit,
            "tpm_limit": self.tpm_limit,
            "staff": self.is_staff_key,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "status": self.status(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
        }


class RequestLog(models.Model):
    """One row per /v1 request, written in bulk from the Redis buffer (see gateway.request_log)."""

    class Degraded(models.TextChoices):
        DOWNGRADED = "downgraded", "downgraded to the fallback profile"
        CACHE = "cache", "answered from the response cache"
        STATIC = "static", "the profile's static answer"
        UNAVAILABLE = "unavailable", "503: unavailable at tier 3"

    request_id = models.CharField(max_length=40, unique=True)
    created_at = models.DateTimeField(db_index=True)
    endpoint = models.CharField(max_length=40)
    key_prefix = models.CharField(max_length=16, blank=True, db_index=True)
    subject = models.CharField(
        max_length=255,
        blank=True,
        db_index=True,
        help_text="Who a single sign-on token was for (its subject claim); empty for API keys.",
    )
    model = models.CharField(max_length=128, blank=True, db_index=True)
    served_model = models.CharField(
        max_length=128, blank=True, help_text="The profile that answered (after a downgrade)."
    )
    node = models.CharField(max_length=63, blank=True, db_index=True)
    status = models.PositiveSmallIntegerField()
    stream = models.BooleanField(default=False)
    latency_ms = models.FloatField()
    ttft_ms = models.FloatField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="Nodes tried: 0 when the request was refused before routing."
    )
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    prompt_truncated = models.BooleanField(
        default=False,
        help_text="The node counted far fewer prompt tokens than estimated: it probably cut "
        "the prompt silently (on a stream, too late for the response header).",
    )
    degraded = models.CharField(
        max_length=12,
        blank=True,
        choices=Degraded.choices,
        help_text='What a degradation tier did to the request (README, "When things go '
        'wrong"); empty when nothing.',
    )

    class Affinity(models.TextChoices):
        HIT = "hit", "sent to the node that holds the conversation's prompt cache"
        MISS = "miss", "a conversation no node holds yet: placed by expected completion time"
        REBALANCED = "rebalanced", "the caching node was too busy: sent elsewhere"

    affinity = models.CharField(
        max_length=12,
        blank=True,
        choices=Affinity.choices,
        help_text="How conversation affinity placed the request; empty when it was off or "
        "the request was not routed.",
    )
    route = models.CharField(
        max_length=200,
        blank=True,
        help_text="Why this node: its expected completion time and the runner-up's "
        "(the X-Clawdbot-Route header).",
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return f"{self.created_at:%H:%M:%S} {self.endpoint} {self.model} {self.status}"


class TierChange(models.Model):
    """A change of the cluster's degradation tier, recorded once by the gateway process that
    made it (gateway.degradation)."""

    at = models.DateTimeField(db_index=True)
    from_tier = models.PositiveSmallIntegerField("from", choices=TIER_CHOICES)
    to_tier = models.PositiveSmallIntegerField("to", choices=TIER_CHOICES)
    error_rate = models.FloatField(help_text="Failed requests over all requests in the window.")
    requests = models.PositiveIntegerField(help_text="Requests in the window, every process.")
    failures = models.PositiveIntegerField(help_text="Of which the cluster failed.")

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} tier {self.from_tier} → {self.to_tier}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "from_tier": self.from_tier,
            "to_tier": self.to_tier,
            "error_rate": self.error_rate,
            "requests": self.requests,
            "failures": self.failures,
        }
