"""Keep the request-log rollups (dashboard.models) up to date with the log.

`refresh` finds the log rows added since the watermark, and recomputes from the log every
minute, quarter-hour and hour those rows fall in, then moves the watermark: a late row (a
flush after a database outage) reopens only its own minute, quarter and hour, and running it
twice changes nothing. Each window reads the coarsest grain that still gives its charts
their points: minutes for the last hour, quarter-hours for a day (96 rows per model, node
and status instead of 1,440), hours for a week. The log rows past the watermark (the last
seconds) are read live by the pages (dashboard.analytics). The aggregation is one
INSERT … SELECT per table, written with the ORM so it runs on PostgreSQL and SQLite alike."""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import (
    Case,
    Count,
    DateTimeField,
    F,
    FloatField,
    Func,
    Max,
    Min,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, TruncHour, TruncMinute
from django.utils import timezone

from dashboard.histogram import BOUNDS, LATENCY_FIELDS, TTFT_FIELDS
from dashboard.models import Grain, KeyUsageRollup, LatencyRollup, RollupWatermark
from gateway.models import RequestLog

log = logging.getLogger(__name__)
QUARTER = timedelta(minutes=15)
# Minute rows serve the 15-minute and 1-hour windows only; the task drops older ones.
KEEP_MINUTES = timedelta(hours=2)
# A backfill (the first refresh over an existing log) recomputes at most this much log time per
# transaction, so no single statement holds locks for long.
CHUNK = timedelta(hours=6)


class TruncQuarter(Func):
    """A time's quarter-hour: 09:37:12 → 09:30:00 (UTC, the connection's time zone)."""

    output_field = DateTimeField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(
            compiler,
            connection,
            template="(date_trunc('hour', %(expressions)s) + floor(extract(minute from "
            "%(expressions)s) / 15) * interval '15 minutes')",
            **extra,
        )

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # Django keeps SQLite times as 'YYYY-MM-DD HH:MM:SS[.ffffff]' text in UTC.
        return self.as_sql(
            compiler,
            connection,
            # No '%' in it: SQLite's debug cursor formats the SQL once more.
            template="(substr(%(expressions)s, 1, 14) || CASE "
            "WHEN CAST(substr(%(expressions)s, 15, 2) AS INTEGER) < 15 THEN '00' "
            "WHEN CAST(substr(%(expressions)s, 15, 2) AS INTEGER) < 30 THEN '15' "
            "WHEN CAST(substr(%(expressions)s, 15, 2) AS INTEGER) < 45 THEN '30' "
            "ELSE '45' END || ':00')",
            **extra,
        )


@dataclass(frozen=True)
class Refreshed:
    rows: int  # log rows taken in
    since: datetime | None  # the earliest quarter-hour recomputed
    ms: float


def bucket_filters(field: str) -> list[Q]:
    """One Q per histogram bucket of `field` (dashboard.histogram.BOUNDS)."""
    filters = [Q(**{f"{field}__lt": BOUNDS[0]})]
    filters += [
        Q(**{f"{field}__gte": low, f"{field}__lt": high})
        for low, high in itertools.pairwise(BOUNDS)
    ]
    filters.append(Q(**{f"{field}__gte": BOUNDS[-1]}))
    return filters


def log_aggregates() -> dict[str, Any]:
    """What a LatencyRollup row holds, as aggregates over RequestLog rows, each named `s_`
    and its column. The histograms and maxima are of successful requests only (a refusal's
    1 ms is no latency), so a page sums them without a filter; the live tail of the log is
    aggregated with these too."""
    ok = Q(status__lt=400)
    produced = Q(status__lt=400, completion_tokens__gt=0)
    aggregates: dict[str, Any] = {
        "requests": Count("id"),
        # 0 where no request succeeded: nothing is counted then, so it caps nothing.
        "latency_max": Coalesce(Max("latency_ms", filter=ok), 0.0),
        "ttft_max": Max("ttft_ms", filter=ok),
        "prompt_tokens": Coalesce(Sum("prompt_tokens"), 0),
        "completion_tokens": Coalesce(Sum("completion_tokens"), 0),
        "gen_tokens": Coalesce(Sum("completion_tokens", filter=produced), 0),
        # Decode time: after the first token on a stream, the whole request otherwise.
        "gen_ms": Coalesce(
            Sum(
                Case(
                    When(stream=True, then=F("latency_ms") - Coalesce("ttft_ms", 0.0)),
                    default=F("latency_ms"),
                    output_field=FloatField(),
                ),
                filter=produced,
            ),
            0.0,
        ),
    }
    for name, q in zip(LATENCY_FIELDS, bucket_filters("latency_ms"), strict=True):
        aggregates[name] = Count("id", filter=q & ok)
    for name, q in zip(TTFT_FIELDS, bucket_filters("ttft_ms"), strict=True):
        aggregates[name] = Count("id", filter=q & ok)
    return {f"s_{name}": aggregate for name, aggregate in aggregates.items()}


ROLLUP_COLUMNS = [name.removeprefix("s_") for name in log_aggregates()]


KEY_COLUMNS = ["requests", "errors", "prompt_tokens", "completion_tokens"]


def key_aggregates() -> dict[str, Any]:
    """A KeyUsageRollup row's columns over RequestLog rows, each named `s_` and its column."""
    return {
        "s_requests": Count("id"),
        "s_errors": Count("id", filter=Q(status__gte=400)),
        "s_prompt_tokens": Coalesce(Sum("prompt_tokens"), 0),
        "s_completion_tokens": Coalesce(Sum("completion_tokens"), 0),
    }


def _insert_select(model: type[Any], query: QuerySet[Any], columns: list[str]) -> int:
    """INSERT INTO model (columns) <query>: `query` is a values() query whose select list is
    exactly `columns`, in order."""
    sql, params = query.query.sql_with_params()
    table = model._meta.db_table
    quoted = ", ".join(connection.ops.quote_name(model._meta.get_field(c).column) for c in columns)
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {table} ({quoted}) {sql}", params)
        return int(cursor.rowcount)


def _ordered(query: QuerySet[Any], group: dict[str, Any], sums: dict[str, Any]) -> QuerySet[Any]:
    """A values() query selecting the `group` expressions then the `sums`, in that order."""
    return query.annotate(**group).values(*group).annotate(**sums).order_by()


def truncate(grain: Grain, field: str) -> Any:
    """The SQL expression of a time's minute, quarter-hour or hour."""
    if grain == Grain.MINUTE:
        return TruncMinute(field)
    if grain == Grain.QUARTER:
        return TruncQuarter(field)
    return TruncHour(field)


def _recompute(grain: Grain, start: datetime, end: datetime, top: int) -> None:
    """Rows of `grain` from `start` to `end`, from the log rows up to id `top` (what the
    watermark will say is in; later rows are the pages' live tail until the next refresh)."""
    LatencyRollup.objects.filter(grain=grain, start__gte=start, start__lt=end).delete()
    KeyUsageRollup.objects.filter(grain=grain, start__gte=start, start__lt=end).delete()
    rows = RequestLog.objects.filter(created_at__gte=start, created_at__lt=end, id__lte=top)
    group = {
        "g_grain": Value(int(grain)),
        "g_start": truncate(grain, "created_at"),
        "g_model": F("model"),
        "g_node": F("node"),
        "g_status": F("status"),
    }
    _insert_select(
        LatencyRollup,
        _ordered(rows, group, log_aggregates()),
        ["grain", "start", "model", "node", "status", *ROLLUP_COLUMNS],
    )
    key_group = {
        "g_grain": Value(int(grain)),
        "g_start": truncate(grain, "created_at"),
        "g_key": F("key_prefix"),
    }
    _insert_select(
        KeyUsageRollup,
        _ordered(rows, key_group, key_aggregates()),
        ["grain", "start", "key_prefix", *KEY_COLUMNS],
    )


def floor_to(moment: datetime, step: timedelta) -> datetime:
    seconds = int(step.total_seconds())
    return moment.replace(microsecond=0) - timedelta(seconds=int(moment.timestamp()) % seconds)


def refresh(now: datetime | None = None) -> Refreshed:
    """Take in the log rows added since the last refresh. One refresh at a time: the
    watermark row is locked for the whole of it. Each grain is recomputed from the log (not
    from a finer grain, which is pruned sooner); minutes only within KEEP_MINUTES of now,
    the only minutes a page reads."""
    started = time.monotonic()
    now = now or timezone.now()
    RollupWatermark.objects.get_or_create(pk=1)
    with transaction.atomic():
        mark = RollupWatermark.objects.select_for_update().get(pk=1)
        new = RequestLog.objects.filter(id__gt=mark.last_id).aggregate(
            first=Min("created_at"), last=Max("created_at"), top=Max("id"), n=Count("id")
        )
        if new["top"] is None:
            return Refreshed(rows=0, since=None, ms=(time.monotonic() - started) * 1000)
        for grain in (Grain.MINUTE, Grain.QUARTER, Grain.HOUR):
            step = timedelta(seconds=int(grain))
            start = floor_to(new["first"], step)
            end = floor_to(new["last"], step) + step
            if grain == Grain.MINUTE:
                start = max(start, floor_to(now - KEEP_MINUTES, step))
            while start < end:
                chunk_end = min(start + CHUNK, end)
                _recompute(grain, start, chunk_end, new["top"])
                start = chunk_end
        mark.last_id = new["top"]
        mark.refreshed_at = timezone.now()
        mark.save(update_fields=["last_id", "refreshed_at"])
    first = floor_to(new["first"], QUARTER)
    ms = (time.monotonic() - started) * 1000
    log.info("rollups took in %d request logs from %s in %.0f ms", new["n"], first, ms)
    return Refreshed(rows=new["n"], since=first, ms=ms)
