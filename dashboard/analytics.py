"""Reads for the latency and usage pages, each a fixed number of bounded queries.

A window reads the rollups (dashboard.rollups) at the grain of its charts' points: minute
rows for 15 minutes and an hour, quarter-hour rows for a day, hour rows for a week, so a
page reads thousands of rows, not millions. To that it adds the log rows the rollups have not
taken in yet (past the watermark: the seconds since the last refresh), aggregated the same
way, so every window is live to the last flush. The database returns bucket counts and
sums; dashboard.histogram turns them into percentiles. The watermark, the rollups and the
tail are read in one snapshot (REPEATABLE READ on PostgreSQL), so a refresh committing
meanwhile neither doubles nor drops rows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, F, Max, Q, QuerySet, Sum
from django.utils.dateparse import parse_datetime

from dashboard.histogram import (
    BOUNDS,
    LATENCY_FIELDS,
    TTFT_FIELDS,
    Stats,
    merge,
    stats_from_row,
)
from dashboard.models import Grain, KeyUsageRollup, LatencyRollup, RollupWatermark
from dashboard.rollups import KEY_COLUMNS, key_aggregates, log_aggregates, truncate
from gateway.models import ApiKey, RequestLog


@dataclass(frozen=True)
class Window:
    key: str
    label: str
    span: timedelta
    grain: Grain  # the rollup rows it reads; also its charts' step

    @property
    def step(self) -> timedelta:
        return timedelta(seconds=int(self.grain))


WINDOWS = {
    w.key: w
    for w in (
        Window("15m", "15 min", timedelta(minutes=15), Grain.MINUTE),
        Window("1h", "1 h", timedelta(hours=1), Grain.MINUTE),
        Window("24h", "24 h", timedelta(hours=24), Grain.QUARTER),
        Window("7d", "7 d", timedelta(days=7), Grain.HOUR),
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
    """The same `s_` columns as rollups.log_aggregates, summed over rollup rows (whose
    histograms and maxima are of successful requests already), and the errors."""
    aggregates: dict[str, Any] = {
        "s_requests": Sum("requests"),
        "s_errors": Sum("requests", filter=Q(status__gte=400)),
        "s_latency_max": Max("latency_max"),
        "s_ttft_max": Max("ttft_max"),
    }
    for name in ("prompt_tokens", "completion_tokens", "gen_tokens", "gen_ms"):
        aggregates[f"s_{name}"] = Sum(name)
    for name in (*LATENCY_FIELDS, *TTFT_FIELDS):
        aggregates[f"s_{name}"] = Sum(name)
    return aggregates


def _log_aggregates() -> dict[str, Any]:
    return {**log_aggregates(), "s_errors": Count("id", filter=Q(status__gte=400))}


@dataclass(frozen=True)
class Source:
    """One place a window's numbers come from: its rows, their aggregates (the same `s_`
    names either way) and the expression of a row's time."""

    rows: QuerySet[Any]
    aggregates: dict[str, Any]
    moment: Any


def sources(
    grain: Grain, since: datetime, last_id: int, *, keys: bool = False
) -> tuple[Source, Source]:
    """A window's rollup rows, and the log rows past the watermark (the live tail)."""
    tail = RequestLog.objects.filter(created_at__gte=since, id__gt=last_id)
    moment = truncate(grain, "created_at")
    if keys:
        summed = {f"s_{n}": Sum(n) for n in KEY_COLUMNS}
        return (
            Source(
                KeyUsageRollup.objects.filter(grain=grain, start__gte=since),
                summed,
                F("start"),
            ),
            Source(tail, key_aggregates(), moment),
        )
    return (
        Source(
            LatencyRollup.objects.filter(grain=grain, start__gte=since),
            rollup_aggregates(),
            F("start"),
        ),
        Source(tail, _log_aggregates(), moment),
    )


# Stand-ins compiled into the cached SQL, replaced by the request's values when it runs.
_SINCE = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
_LAST_ID = 987_654_321_012_345
_MODEL = "\x01model"
_NODE = "\x01node"
GROUPS = {
    "g_model": F("model"),
    "g_node": F("node"),
    "g_status": F("status"),
    "g_key": F("key_prefix"),
}


@lru_cache(maxsize=128)
def _compiled(
    vendor: str,
    grain: Grain,
    tail: bool,
    keys: bool,
    group: tuple[str, ...],
    by_model: bool,
    by_node: bool,
) -> tuple[str, tuple[Any, ...]]:
    """The SQL of one grouped read, compiled once per shape: building a query of 60
    aggregates through the ORM costs more CPU than running it on the rollups."""
    source = sources(grain, _SINCE, _LAST_ID, keys=keys)[1 if tail else 0]
    rows = source.rows
    if by_model:
        rows = rows.filter(model=_MODEL)
    if by_node:
        rows = rows.filter(node=_NODE)
    fields = {name: GROUPS.get(name, source.moment) for name in group}
    query = rows.values(**fields).annotate(**source.aggregates).order_by()
    sql, params = query.query.sql_with_params()
    return sql, tuple(params)


def grouped(
    grain: Grain,
    *,
    tail: bool,
    group: tuple[str, ...],
    since: datetime,
    last_id: int,
    keys: bool = False,
    model: str = "",
    node: str = "",
) -> list[dict[str, Any]]:
    """Rows of the rollups (or of the tail) grouped by `group` (g_model, g_node, g_status,
    g_key, g_at: the row's minute, quarter or hour), with the `s_` aggregates."""
    sql, params = _compiled(connection.vendor, grain, tail, keys, group, bool(model), bool(node))
    adapt = connection.ops.adapt_datetimefield_value
    swap = {adapt(_SINCE): adapt(since), _LAST_ID: last_id, _MODEL: model, _NODE: node}
    with connection.cursor() as cursor:
        cursor.execute(sql, [swap.get(p, p) for p in params])
        names = [column[0] for column in cursor.description]
        found = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    if "g_at" in group:
        for row in found:
            row["g_at"] = _aware(row["g_at"])
    return found


def _aware(value: Any) -> datetime:
    """A truncated time as the database gave it: a datetime (PostgreSQL) or its text
    (SQLite, in UTC)."""
    moment = value if isinstance(value, datetime) else parse_datetime(str(value))
    if moment is None:
        raise ValueError(f"not a time: {value!r}")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@contextmanager
def one_snapshot() -> Iterator[None]:
    """Reads that see one state of the database: the watermark, the rollups and the tail
    must agree. Inside a transaction already (a test), that one's reads are used as they are."""
    if connection.in_atomic_block or connection.vendor != "postgresql":
        yield  # SQLite: a transaction's reads are already serializable
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def watermark() -> tuple[int, datetime | None]:
    mark = RollupWatermark.objects.filter(pk=1).values_list("last_id", "refreshed_at").first()
    return mark if mark is not None else (0, None)


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
    """Five queries: the watermark; then from the rollups and from the tail each, the window
    by model, node and status, and the window over time for the chosen model and node."""
    since = floor_time(now - window.span, window.step)
    breakdown: list[tuple[str, str, int, Stats]] = []
    per_moment: list[tuple[datetime, Stats]] = []
    with one_snapshot():
        last_id, rolled_up_at = watermark()
        for tail in (False, True):
            breakdown += [
                (r["g_model"], r["g_node"], r["g_status"], stats_from_row(r))
                for r in grouped(
                    window.grain,
                    tail=tail,
                    group=("g_model", "g_node", "g_status"),
                    since=since,
                    last_id=last_id,
                )
            ]
            per_moment += [
                (r["g_at"], stats_from_row(r))
                for r in grouped(
                    window.grain,
                    tail=tail,
                    group=("g_at",),
                    since=since,
                    last_id=last_id,
                    model=model,
                    node=node,
                )
            ]
    chosen = [
        (m, n, status, s)
        for m, n, status, s in breakdown
        if (not model or m == model) and (not node or n == node)
    ]
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
    """Six queries: the watermark; from the rollups and the tail each, per key and per key
    and moment; the keys' names."""
    step = window.step
    since = floor_time(now - window.span, step)
    totals: list[dict[str, Any]] = []
    over_time: list[dict[str, Any]] = []
    with one_snapshot():
        last_id, _ = watermark()
        for tail in (False, True):
            for group, into in ((("g_key",), totals), (("g_key", "g_at"), over_time)):
                into += grouped(
                    window.grain,
                    tail=tail,
                    keys=True,
                    group=group,
                    since=since,
                    last_id=last_id,
                )
    merged = merge_keys(totals)
    names = {
        k["prefix"]: k
        for k in ApiKey.objects.filter(prefix__in=[p for p in merged if p]).values(
            "prefix", "name", "owner__username"
        )
    }
    keys = sorted(
        (key_usage(total, names.get(prefix)) for prefix, total in merged.items()),
        key=lambda k: (-k.requests, k.prefix),
    )
    top = [k.prefix for k in keys[:TOP_KEYS]]
    xs, requests, tokens, errors = usage_points(over_time, top, since, step)
    return UsageReport(window, since, keys, xs, requests, tokens, errors)


def merge_keys(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-key sums from rollup and tail rows, by prefix."""
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        into = merged.setdefault(row["g_key"], {"g_key": row["g_key"]})
        for name in ("s_requests", "s_errors", "s_prompt_tokens", "s_completion_tokens"):
            into[name] = into.get(name, 0) + int(row[name] or 0)
    return merged


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
