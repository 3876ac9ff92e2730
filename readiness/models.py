"""The readiness checklist: what is checked (one row per check, switchable by an operator)
and what each run found (one row per check and run, with the reason)."""

from __future__ import annotations

from django.db import models


class ReadinessCheck(models.Model):
    """A check's definition. The code behind each `key` is in `readiness.checks`; the rows
    are created by migration and kept in step by `readiness.catalog.sync()`."""

    key = models.SlugField(max_length=40, unique=True)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    position = models.PositiveSmallIntegerField(default=0)
    enabled = models.BooleanField(
        default=True,
        help_text="A disabled check is reported as skipped and does not block production.",
    )

    class Meta:
        ordering = ["position", "key"]

    def __str__(self) -> str:
        return self.title


class ReadinessRun(models.Model):
    class State(models.TextChoices):
        RUNNING = "running"
        PASSED = "passed"
        FAILED = "failed"

    started_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.RUNNING)
    trigger = models.CharField(
        max_length=40, help_text="What started it: command, serve --production, admin, api."
    )
    gateway_url = models.CharField(
        max_length=200, blank=True, help_text="The gateway the request-path checks went to."
    )

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.started_at:%Y-%m-%d %H:%M:%S} {self.state}"

    @property
    def failures(self) -> list[ReadinessResult]:
        return [r for r in self.results.all() if r.status == ReadinessResult.Status.FAIL]


class ReadinessResult(models.Model):
    class Status(models.TextChoices):
        PASS = "pass"
        FAIL = "fail"
        SKIP = "skip"

    run = models.ForeignKey(ReadinessRun, on_delete=models.CASCADE, related_name="results")
    check_key = models.SlugField(max_length=40)
    title = models.CharField(max_length=200)
    status = models.CharField(max_length=4, choices=Status.choices)
    reason = models.TextField()
    details = models.JSONField(default=dict, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["run", "id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "check_key"], name="one_result_per_check")
        ]

    def __str__(self) -> str:
        return f"{self.check_key}: {self.status}"
