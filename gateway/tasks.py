from __future__ import annotations

import logging
import time

from celery import shared_task
from django.db import DataError, IntegrityError, transaction

from clawdbot_site import redis_keys
from clawdbot_site.redis_client import sync_client
from gateway.models import RequestLog
from gateway.request_log import BUFFER, FLUSH_LOCK, REJECTED, REJECTED_KEPT, to_row_kwargs

log = logging.getLogger(__name__)
BATCH = 2000
# What the database says of a row it will never take, whatever the retry (psycopg raises
# ValueError for a NUL in text before sending). An outage (OperationalError) is not among
# them: those entries stay in the buffer until the database is back.
REFUSED_ROW = (DataError, IntegrityError, ValueError, TypeError)


@shared_task(ignore_result=True, soft_time_limit=50, time_limit=60)
def flush_request_logs(max_batches: int = 50) -> int:
    """Move buffered request logs into the database; returns rows inserted. An entry the
    database refuses, or that cannot be read, is set aside (`set_aside`) instead of holding
    back every entry behind it."""
    client = sync_client()
    # One flusher at a time: two would insert the same entries before either trims them.
    if not client.set(FLUSH_LOCK, "1", nx=True, ex=60):
        return 0
    inserted = 0
    started = time.monotonic()
    try:
        for _ in range(max_batches):
            raw = [
                item if isinstance(item, bytes) else item.encode()
                for item in client.lrange(BUFFER, 0, BATCH - 1)
            ]
            if not raw:
                break
            readable: list[tuple[bytes, dict[str, object]]] = []
            refused: list[bytes] = []
            for item in raw:
                row = to_row_kwargs(item)
                if row is None:
                    refused.append(item)
                else:
                    readable.append((item, row))
            stored, more_refused = _insert(readable)
            refused += more_refused
            if refused:
                set_aside(refused)
            client.ltrim(BUFFER, len(raw), -1)
            inserted += stored
    finally:
        client.delete(FLUSH_LOCK)
    if inserted:
        log.info(
            "flushed %d request logs in %.0f ms", inserted, (time.monotonic() - started) * 1000
        )
    return inserted


def _insert(entries: list[tuple[bytes, dict[str, object]]]) -> tuple[int, list[bytes]]:
    """Insert the rows in one statement; if the database refuses the batch, row by row, each
    in its own savepoint, to find the ones it refuses. Returns (rows sent, refused entries).
    ignore_conflicts: a retry after a crash between insert and trim re-inserts entries whose
    request_id already exists; they are skipped, not duplicated."""
    if not entries:
        return 0, []
    try:
        with transaction.atomic():
            RequestLog.objects.bulk_create(
                [RequestLog(**row) for _, row in entries], ignore_conflicts=True
            )
        return len(entries), []
    except REFUSED_ROW:
        pass
    stored, refused = 0, []
    for raw, row in entries:
        try:
            with transaction.atomic():
                RequestLog.objects.bulk_create([RequestLog(**row)], ignore_conflicts=True)
            stored += 1
        except REFUSED_ROW as exc:
            log.warning("request log entry refused by the database (%s): %r", exc, raw[:300])
            refused.append(raw)
    return stored, refused


def set_aside(entries: list[bytes]) -> None:
    """Keep refused entries for a look (`clawdbot requestlog rejected`), the newest
    REJECTED_KEPT of them, and count them for /metrics
    (clawdbot_request_log_rejected_total)."""
    client = sync_client()
    with client.pipeline(transaction=False) as pipe:
        pipe.rpush(REJECTED, *entries)
        pipe.ltrim(REJECTED, -REJECTED_KEPT, -1)
        pipe.incrby(redis_keys.METRIC_LOG_REJECTED, len(entries))
        pipe.execute()
    log.warning("set aside %d request log entries the database cannot take", len(entries))
