from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from dashboard import rollups
from dashboard.models import Grain, KeyUsageRollup, LatencyRollup
from dashboard.rollups import KEEP_MINUTES

# Minute rows serve the hour, quarter-hour rows the day, hour rows the week (and are kept
# longer, for a look back).
KEEP_QUARTERS = timedelta(days=2)
KEEP_HOURS = timedelta(days=35)


@shared_task(ignore_result=True, soft_time_limit=110, time_limit=120)
def refresh_rollups() -> int:
    """Take new request logs into the console's rollups and drop rows no page reads any
    more; returns the log rows taken in."""
    refreshed = rollups.refresh()
    now = timezone.now()
    for model in (LatencyRollup, KeyUsageRollup):
        model.objects.filter(grain=Grain.MINUTE, start__lt=now - KEEP_MINUTES).delete()
        model.objects.filter(grain=Grain.QUARTER, start__lt=now - KEEP_QUARTERS).delete()
        model.objects.filter(grain=Grain.HOUR, start__lt=now - KEEP_HOURS).delete()
    return refreshed.rows
