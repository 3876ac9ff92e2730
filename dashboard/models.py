"""Rollups of the request log for the console's latency and usage pages.

At millions of request-log rows a day's percentiles cannot be computed from the rows within a
page's time budget, so `dashboard.rollups.refresh` sums them into minute, quarter-hour and hour rows
(counts, sums and histogram bucket counts); the pages add up those rows instead. Rows are
recomputed from the log, never incremented, so a refresh can run again at any time."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from dashboard.histogram import LATENCY_FIELDS, TTFT_FIELDS


class Grain(models.IntegerChoices):
    MINUTE = 60, "minute"
    QUARTER = 900, "quarter-hour"
    HOUR = 3600, "hour"


class LatencyRollup(models.Model):
    """Requests of one model on one node with one status in one minute, quarter-hour or hour. The
    histogram columns (lat_00…, ttft_00…, see dashboard.histogram) and the maxima are of the
    row's successful requests only: a refusal's millisecond is no latency."""

    grain = models.PositiveIntegerField(choices=Grain.choices)
    start = models.DateTimeField()
    model = models.CharField(max_length=128, blank=True)
    node = models.CharField(max_length=63, blank=True)
    status = models.PositiveSmallIntegerField()
    requests = models.PositiveIntegerField()
    latency_max = models.FloatField()
    ttft_max = models.FloatField(null=True)
    prompt_tokens = models.BigIntegerField()
    completion_tokens = models.BigIntegerField()
    gen_tokens = models.BigIntegerField(help_text="Completion tokens of rows with a first token.")
    gen_ms = models.FloatField(help_text="Their time after the first token.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["grain", "start", "model", "node", "status"], name="latency_rollup_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M} {self.model} on {self.node}: {self.status}"


for _field in (*LATENCY_FIELDS, *TTFT_FIELDS):
    LatencyRollup.add_to_class(_field, models.PositiveIntegerField(default=0))


class KeyUsageRollup(models.Model):
    """Requests, errors and tokens of one API key (or of single sign-on tokens: an empty
    prefix) in one minute, quarter-hour or hour."""

    grain = models.PositiveIntegerField(choices=Grain.choices)
    start = models.DateTimeField()
    key_prefix = models.CharField(max_length=16, blank=True)
    requests = models.PositiveIntegerField()
    errors = models.PositiveIntegerField()
    prompt_tokens = models.BigIntegerField()
    completion_tokens = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["grain", "start", "key_prefix"], name="key_usage_rollup_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M} ck-{self.key_prefix}: {self.requests}"


class RollupWatermark(models.Model):
    """One row: the highest request-log id the rollups have taken in. The flush inserts rows
    one batch at a time under a lock, so ids grow in commit order."""

    last_id = models.BigIntegerField(default=0)
    refreshed_at = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"request logs rolled up to id {self.last_id}"


class ChatKey(models.Model):
    """The short-lived API key the chat page uses, bound to one login session: revoked when
    the session logs out, expiring with it at the latest (dashboard.chat_keys)."""

    key = models.OneToOneField("gateway.ApiKey", on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    session_key = models.CharField(max_length=40, db_index=True)

    def __str__(self) -> str:
        return f"chat key {self.key.masked} of {self.user} (session …{self.session_key[-6:]})"
