"""Reads for the latency and usage pages, each a fixed number of bounded queries.

The 15-minute and 1-hour windows aggregate the request log itself (at most about an hour of
rows, through the created_at index), so they are live to the last flush. The 24-hour and
7-day windows add up the rollups (dashboard.rollups): quarter-hour rows for a day, hour
rows for a week, so a page reads thousands of rows, not millions. Either way the database
returns bucket counts and sums, and dashboard.histogram turns them into percentiles."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from django.db.models import Count, F, Max, Q, QuerySet, Sum
from django.db.models.functions import TruncMinute

from dashboard.histogram import (
    BOUNDS,
    LATENCY_FIELDS,
    TTFT_FIELDS,
    Stats,
    merge,
    stats_from_row,
)
from dashboard.models import Grain, KeyUsageRollup, LatencyRollup, RollupWatermark
from dashboard.rollups import key_aggregates, log_aggregates
from gateway.models import ApiKey, RequestLog

Source = Literal["log", "quarter", "hour"]


@dataclass(frozen=True)
class Window:
    key: str
    label: str
    span: timedelta
    source: Source
    step: timedelta  # one point of the charts over time


WINDOWS = {
    w.key: w
    for w in (
        Window("15m", "15 min", timedelta(minutes=15), "log", timedelta(minutes=1)),
        Window("1h", "1 h", timedelta(hours=1), "log", timedelta(minutes=1)),
        Window("24h", "24 h", timedelta(hours=24), "quarter", timedelta(minutes=15)),
        Window("7d", "7 d", timedelta(days=7), "hour", timedelta(hours=1)),
    )
}
DEFAULT_WINDOW = "1h"


def window_for(key: str | None) -> Window:
    return WINDOWS.get(key or "", WINDOWS[DEFAULT_WINDOW])


def floor_time(moment: datetime, step: timedelta) -> datetime:
    seconds = int(step.total_seconds())
    return moment.replace(microsecond=0) - timedelta(seconds=int(moment.timestamp()) % seconds)


# --- latency ---------------------------------------------------------------------------


def rollup_aggregates() -> dict[str, Any]:
    """The same `s_` columns as rollups.log_aggregates(only_ok=True), summed over rollup
    rows: histograms and maxima of successful rows, counts of every row."""
    ok = Q(status__lt=400)
    aggregates: dict[str, Any] = {
        "s_requests": Sum("requests"),
        "s_errors": Sum("requests", filter=Q(status__gte=400)),
        "s_latency_max": Max("latency_max", filter=ok),
        "s_ttft_max": Max("ttft_max", filter=ok),
    }
    for name in ("prompt_tokens", "completion_tokens", "gen_tokens", "gen_ms"):
        aggregates[f"s_{name}"] = Sum(name)
    for name in (*LATENCY_FIELDS, *TTFT_FIELDS):
        aggregates[f"s_{name}"] = Sum(name, filter=ok)
    return aggregates


def _log_aggregates() -> dict[str, Any]:
    return {**log_aggregates(only_ok=True), "s_errors": Count("id", filter=Q(status__gte=400))}


def _source(window: Window, since: datetime) -> tuple[QuerySet[Any], dict[str, Any], Any]:
    """The rows a window reads, their aggregates, and the expression of a row's minute (or
    hour)."""
    if window.source == "log":
        rows: QuerySet[Any] = RequestLog.objects.filter(created_at__gte=since)
        return rows, _log_aggregates(), TruncMinute("created_at")
    grain = Grain.QUARTER if window.source == "quarter" else Grain.HOUR
    rows = LatencyRollup.objects.filter(grain=grain, start__gte=since)
    return rows, rollup_aggregates(), "start"


@dataclass(frozen=True)
class Group:
    name: str
    stats: Stats


@dataclass(frozen=True)
class Point:
    at: datetime
    stats: Stats


@dataclass
class LatencyReport:
    window: Window
    since: datetime
    until: datetime
    model: str
    node: str
    overall: Stats
    by_model: list[Group]
    by_node: list[Group]
    statuses: list[tuple[int, int]]
    models: list[str]  # every model and node with requests in the window, for the filters
    nodes: list[str]
    points: list[Point]
    rolled_up_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def latency_report(
    window: Window, *, now: datetime, model: str = "", node: str = ""
) -> LatencyReport:
    """Three queries: the window by model, node and status; the window over time (for the
    chosen model and node); the rollups' last refresh."""
    since = floor_time(
        now - window.span, window.step if window.source != "log" else timedelta(minutes=1)
    )
    rows, aggregates, moment = _source(window, since)
    breakdown = [
        (r["g_model"], r["g_node"], r["g_status"], stats_from_row(r))
        for r in rows.values(g_model=_f("model"), g_node=_f("node"), g_status=_f("status"))
        .annotate(**aggregates)
        .order_by()
    ]
    chosen = [
        (m, n, status, s)
        for m, n, status, s in breakdown
        if (not model or m == model) and (not node or n == node)
    ]
    over_time = rows
    if model:
        over_time = over_time.filter(model=model)
    if node:
        over_time = over_time.filter(node=node)
    per_moment = [
        (r["g_at"], stats_from_row(r))
        for r in over_time.values(g_at=_f(moment)).annotate(**aggregates).order_by("g_at")
    ]
    rolled_up_at = None
    if window.source != "log":
        rolled_up_at = (
            RollupWatermark.objects.filter(pk=1).values_list("refreshed_at", flat=True).first()
        )
    return LatencyReport(
        window=window,
        since=since,
        until=now,
        model=model,
        node=node,
        overall=merge(s for *_, s in chosen),
        by_model=groups((m, s) for m, _, _, s in chosen),
        by_node=groups((n, s) for _, n, _, s in chosen),
        statuses=status_counts((status, s.requests) for _, _, status, s in chosen),
        # A request refused before it named a model or reached a node has neither.
        models=sorted({m for m, *_ in breakdown if m}),
        nodes=sorted({n for _, n, *_ in breakdown if n}),
        points=points(per_moment, window.step, since),
        rolled_up_at=rolled_up_at,
    )


def _f(expression: Any) -> Any:
    return F(expression) if isinstance(expression, str) else expression


def groups(named: Iterable[tuple[str, Stats]]) -> list[Group]:
    """Stats merged per name, busiest first."""
    by_name: dict[str, list[Stats]] = defaultdict(list)
    for name, stats in named:
        by_name[name].append(stats)
    merged = [Group(name, merge(s)) for name, s in by_name.items()]
    return sorted(merged, key=lambda g: (-g.stats.requests, g.name))


def status_counts(pairs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    counts: dict[int, int] = defaultdict(int)
    for status, n in pairs:
        counts[status] += n
    return sorted(counts.items())


def points(
    per_moment: Iterable[tuple[datetime, Stats]], step: timedelta, since: datetime
) -> list[Point]:
    """Minute (or hour) rows merged into chart points `step` wide, aligned on `since`."""
    buckets: dict[datetime, list[Stats]] = defaultdict(list)
    width = step.total_seconds()
    for at, stats in per_moment:
        offset = int((at - since).total_seconds() // width)
        buckets[since + offset * step].append(stats)
    return [Point(at, merge(s)) for at, s in sorted(buckets.items())]


def series(report: LatencyReport) -> dict[str, Any]:
    """The charts' data: unix seconds and one list per line, a point per step across the
    whole window (None where nothing was counted), and the histograms."""
    step = report.window.step
    step_s = step.total_seconds()
    xs, rate, errors, tps = [], [], [], []
    lat: dict[str, list[float | None]] = {"p50": [], "p95": [], "p99": []}
    ttft: dict[str, list[float | None]] = {"p50": [], "p95": [], "p99": []}
    for point in every_step(report.points, report.since, report.until, step):
        xs.append(int(point.at.timestamp()))
        rate.append(round(point.stats.requests / step_s, 3))
        errors.append(_pct(point.stats.error_rate))
        tps.append(_round(point.stats.tokens_per_s))
        for name, value in point.stats.latency_quantiles().items():
            lat[name].append(_round(value))
        for name, value in point.stats.ttft_quantiles().items():
            ttft[name].append(_round(value))
    return {
        "latency": [xs, lat["p50"], lat["p95"], lat["p99"]],
        "ttft": [xs, ttft["p50"], ttft["p95"], ttft["p99"]],
        "traffic": [xs, rate],
        "errors": [xs, errors],
        "tokens": [xs, tps],
        "latency_hist": histogram_data(report.overall.latency),
        "ttft_hist": histogram_data(report.overall.ttft),
    }


def every_step(
    points: list[Point], since: datetime, until: datetime, step: timedelta
) -> list[Point]:
    """The points with an empty one for each step nothing was counted in, so a chart's time
    axis spans the window."""
    present = {p.at: p for p in points}
    filled = []
    at = since
    while at <= until:
        filled.append(present.get(at) or Point(at, Stats()))
        at += step
    return filled


def histogram_data(counts: Sequence[int]) -> dict[str, Any]:
    """The buckets from the first to the last counted (and one either side), labelled by
    their upper bound: 26 labels would not fit a chart's width."""
    used = [i for i, n in enumerate(counts) if n]
    if not used:
        return {"edges": [], "counts": []}
    first, last = max(used[0] - 1, 0), min(used[-1] + 1, len(counts) - 1)
    edges = [(_bound(BOUNDS[i]) if i < len(BOUNDS) else None) for i in range(first, last + 1)]
    return {"edges": edges, "counts": list(counts[first : last + 1])}


def _bound(ms: float) -> str:
    return f"{ms / 1000:g} s" if ms >= 1000 else f"{ms:g} ms"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _pct(value: float | None) -> float | None:
    return None if value is None else round(value * 100, 2)


# --- keys and usage ----------------------------------------------------------------------


@dataclass(frozen=True)
class KeyUsage:
    prefix: str  # empty: single sign-on tokens
    name: str
    owner: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass
class UsageReport:
    window: Window
    since: datetime
    keys: list[KeyUsage]
    # Per chart point: the top keys' requests (and tokens), the rest summed as "other".
    xs: list[int]
    requests: dict[str, list[int]]
    tokens: dict[str, list[int]]
    errors: list[int]


TOP_KEYS = 6


def usage_report(window: Window, *, now: datetime) -> UsageReport:
    """Three queries: per key over the window, per key and moment, the keys' names."""
    step = window.step
    since = floor_time(now - window.span, step if window.source != "log" else timedelta(minutes=1))
    rows: QuerySet[Any]
    moment: Any
    if window.source == "log":
        rows = RequestLog.objects.filter(created_at__gte=since)
        aggregates, moment = key_aggregates(), TruncMinute("created_at")
    else:
        grain = Grain.QUARTER if window.source == "quarter" else Grain.HOUR
        rows = KeyUsageRollup.objects.filter(grain=grain, start__gte=since)
        aggregates = {
            f"s_{n}": Sum(n) for n in ("requests", "errors", "prompt_tokens", "completion_tokens")
        }
        moment = "start"
    totals = list(rows.values(g_key=_f("key_prefix")).annotate(**aggregates).order_by())
    over_time = list(
        rows.values(g_key=_f("key_prefix"), g_at=_f(moment)).annotate(**aggregates).order_by()
    )
    names = {
        k["prefix"]: k
        for k in ApiKey.objects.filter(
            prefix__in=[t["g_key"] for t in totals if t["g_key"]]
        ).values("prefix", "name", "owner__username")
    }
    keys = sorted(
        (key_usage(t, names.get(t["g_key"])) for t in totals),
        key=lambda k: (-k.requests, k.prefix),
    )
    top = [k.prefix for k in keys[:TOP_KEYS]]
    xs, requests, tokens, errors = usage_points(over_time, top, since, step)
    return UsageReport(window, since, keys, xs, requests, tokens, errors)


def key_usage(total: Mapping[str, Any], key: Mapping[str, Any] | None) -> KeyUsage:
    prefix = total["g_key"]
    return KeyUsage(
        prefix=prefix,
        name=(key or {}).get("name")
        or ("single sign-on tokens" if not prefix else "(deleted key)"),
        owner=(key or {}).get("owner__username") or "",
        requests=int(total["s_requests"] or 0),
        errors=int(total["s_errors"] or 0),
        prompt_tokens=int(total["s_prompt_tokens"] or 0),
        completion_tokens=int(total["s_completion_tokens"] or 0),
    )


def usage_points(
    rows: Iterable[Mapping[str, Any]], top: list[str], since: datetime, step: timedelta
) -> tuple[list[int], dict[str, list[int]], dict[str, list[int]], list[int]]:
    """Per-key rows by minute (or hour) into chart points: the top keys by name, everyone
    else as "other"; every point from `since` to the last row present, zeros included."""
    width = step.total_seconds()
    by_point: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0]))
    for row in rows:
        offset = int((row["g_at"] - since).total_seconds() // width)
        label = row["g_key"] if row["g_key"] in top else "other"
        cell = by_point[offset][label]
        cell[0] += int(row["s_requests"] or 0)
        cell[1] += int(row["s_prompt_tokens"] or 0) + int(row["s_completion_tokens"] or 0)
        cell[2] += int(row["s_errors"] or 0)
    if not by_point:
        return [], {}, {}, []
    offsets = range(0, max(by_point) + 1)
    labels = [*top, "other"] if any("other" in p for p in by_point.values()) else list(top)
    xs = [int((since + i * step).timestamp()) for i in offsets]
    requests = {
        lbl: [by_point[i][lbl][0] if lbl in by_point[i] else 0 for i in offsets] for lbl in labels
    }
    tokens = {
        lbl: [by_point[i][lbl][1] if lbl in by_point[i] else 0 for i in offsets] for lbl in labels
    }
    errors = [sum(c[2] for c in by_point[i].values()) if i in by_point else 0 for i in offsets]
    return xs, requests, tokens, errors
