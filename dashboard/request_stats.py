"""The cluster's last five minutes of requests, from the request log: how many per second,
the share that failed (status 500 and up: the cluster's fault, not the client's) and the
latency percentiles. A bounded read: the window is found through the created_at index, and
each percentile is one row fetched at its rank (nearest rank), so a busy window costs a sort
of its own rows, never of the table."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Q

from gateway.models import RequestLog

WINDOW = timedelta(minutes=5)
PERCENTILES = (0.50, 0.95, 0.99)


@dataclass(frozen=True)
class RecentRequests:
    requests: int
    errors: int
    per_second: float
    error_rate: float  # 0..1
    latency_ms: dict[str, float]  # "p50", "p95", "p99"; empty without requests

    @property
    def error_pct(self) -> float:
        return self.error_rate * 100


def rank(p: float, count: int) -> int:
    """The 0-based index of the p-th percentile among `count` sorted values (nearest rank)."""
    return min(max(math.ceil(p * count) - 1, 0), count - 1)


def recent_requests(now: datetime) -> RecentRequests:
    window = RequestLog.objects.filter(created_at__gt=now - WINDOW, created_at__lte=now)
    counts = window.aggregate(n=Count("id"), errors=Count("id", filter=Q(status__gte=500)))
    n, errors = counts["n"], counts["errors"]
    latency = {}
    if n:
        ordered = window.order_by("latency_ms").values_list("latency_ms", flat=True)
        for p in PERCENTILES:
            latency[f"p{round(p * 100)}"] = float(ordered[rank(p, n)])
    return RecentRequests(
        requests=n,
        errors=errors,
        per_second=n / WINDOW.total_seconds(),
        error_rate=errors / n if n else 0.0,
        latency_ms=latency,
    )
