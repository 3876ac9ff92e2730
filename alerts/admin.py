from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from kombu.exceptions import OperationalError

from alerts.events import AlertEvent
from alerts.models import AlertChannel
from alerts.tasks import send_alert


@admin.register(AlertChannel)
class AlertChannelAdmin(admin.ModelAdmin):
    # Not the target: a Slack or WeCom webhook URL is itself the secret that lets one post.
    list_display = ("name", "kind", "events", "min_interval_s", "enabled")
    list_filter = ("kind", "enabled")
    actions = ["send_test"]

    @admin.action(description="Send a test alert")
    def send_test(self, request: HttpRequest, queryset: QuerySet[AlertChannel]) -> None:
        chosen = list(queryset.filter(enabled=True))
        skipped = queryset.count() - len(chosen)
        for channel in chosen:
            # To this channel only, past its rate limit.
            event = AlertEvent(
                kind="test",
                subject="test",
                severity="info",
                title="Test alert from Clawdbot",
                text=f"Sent from the admin by {request.user} to check channel {channel.name}.",
            )
            try:
                send_alert.delay(channel.pk, event.to_dict(), 0)
            except OperationalError as exc:
                self.message_user(request, f"The task queue is unreachable: {exc}", messages.ERROR)
                return
        self.message_user(
            request,
            f"Test alert queued for {len(chosen)} channel(s)"
            + (f"; {skipped} disabled channel(s) skipped." if skipped else "."),
            messages.SUCCESS,
        )
