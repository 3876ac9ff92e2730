from __future__ import annotations

import logging
import time

from celery import shared_task

from clawdbot_site.redis_client import sync_client
from gateway.models import RequestLog
from gateway.request_log import BUFFER, FLUSH_LOCK, to_row_kwargs

log = logging.getLogger(__name__)
BATCH = 2000


@shared_task(ignore_result=True, soft_time_limit=50, time_limit=60)
def flush_request_logs(max_batches: int = 50) -> int:
    """Move buffered request logs into the database; returns rows inserted."""
    client = sync_client()
    # One flusher at a time: two would insert the same entries before either trims them.
    if not client.set(FLUSH_LOCK, "1", nx=True, ex=60):
        return 0
    inserted = 0
    started = time.monotonic()
    try:
        for _ in range(max_batches):
            raw = client.lrange(BUFFER, 0, BATCH - 1)
            if not raw:
                break
            rows = [
                r
                for r in (
                    to_row_kwargs(item if isinstance(item, bytes) else item.encode())
                    for item in raw
                )
                if r is not None
            ]
            # ignore_conflicts: a retry after a crash between insert and trim re-inserts
            # entries whose request_id already exists; they are skipped, not duplicated.
            RequestLog.objects.bulk_create(
                [RequestLog(**row) for row in rows], ignore_conflicts=True
            )
            client.ltrim(BUFFER, len(raw), -1)
            inserted += len(rows)
    finally:
        client.delete(FLUSH_LOCK)
    if inserted:
        log.info(
            "flushed %d request logs in %.0f ms", inserted, (time.monotonic() - started) * 1000
        )
    return inserted
