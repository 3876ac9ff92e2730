"""Starting a checklist run from the admin or the API: the row first (so the caller can
point at it), the work on a Celery worker."""

from __future__ import annotations

from django.db import transaction

from readiness.models import ReadinessRun
from readiness.runner import start_run


def queue_run(trigger: str) -> ReadinessRun:
    """A run in state `running`, sent to a worker once committed. Raises the broker's error
    (kombu OperationalError) when the queue is unreachable, after marking the run failed."""
    from readiness.tasks import run_readiness

    run = start_run(trigger)

    def send() -> None:
        try:
            run_readiness.delay(run.pk)
        except Exception:
            ReadinessRun.objects.filter(pk=run.pk).update(state=ReadinessRun.State.FAILED)
            raise

    transaction.on_commit(send)
    return run
