from __future__ import annotations

from celery import shared_task

from readiness.models import ReadinessRun
from readiness.runner import run_checklist

# The smoke load's requests answer within the read timeout; a few profiles fit in this.
RUN_SOFT_LIMIT_S = 600


@shared_task(ignore_result=True, soft_time_limit=RUN_SOFT_LIMIT_S, time_limit=RUN_SOFT_LIMIT_S + 30)
def run_readiness(run_id: int) -> str:
    """A run started from the admin or the API: its row exists already (state running)."""
    run = ReadinessRun.objects.filter(pk=run_id).first()
    if run is None:
        return "gone"
    return run_checklist(trigger=run.trigger, run_id=run.pk).state
