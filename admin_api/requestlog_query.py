"""The request-log query string of GET /api/requests as ORM filters (pure: no database).

Every parameter is checked, and an unknown one is an error, so `?stauts=500` does not
silently return the whole log."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils.dateparse import parse_datetime

from admin_api.errors import FieldErrors

PAGING = ("cursor", "limit")
# Parameter -> the RequestLog field it matches exactly.
EXACT = {
    "request_id": "request_id",
    "model": "model",
    "served_model": "served_model",
    "node": "node",
    "key": "key_prefix",
    "endpoint": "endpoint",
    "error_code": "error_code",
}
FILTERS = (*EXACT, "status", "stream", "since", "until", "min_latency_ms", "truncated")
STATUS_CLASS_RE = re.compile(r"^[1-5]xx$")
RELATIVE_RE = re.compile(r"^(\d{1,6})([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
MAX_STATUSES = 20


def parse_filters(params: Mapping[str, str], now: datetime) -> Q:
    """One Q for the query parameters, all of them ANDed (paging is the paginator's)."""
    errors: dict[str, list[str]] = {}
    lookups = Q()
    for name, raw in params.items():
        if name in PAGING:
            continue
        if name not in FILTERS:
            errors[name] = [f"Unknown filter. Filters: {', '.join(FILTERS)}."]
            continue
        try:
            lookups &= _one(name, raw.strip(), now)
        except ValueError as exc:
            errors[name] = [str(exc)]
    if errors:
        raise FieldErrors(errors)
    return lookups


def _one(name: str, raw: str, now: datetime) -> Q:
    if name in EXACT:
        if not raw:
            raise ValueError("Empty; leave the parameter out to match every value.")
        if name == "key":
            raw = raw.removeprefix("ck-").split("-", 1)[0]  # a whole key or ck-PREFIX works
        return Q(**{EXACT[name]: raw})
    if name == "status":
        return _statuses(raw)
    if name in ("stream", "truncated"):
        field = "stream" if name == "stream" else "prompt_truncated"
        return Q(**{field: _boolean(raw)})
    if name in ("since", "until"):
        return Q(**{"created_at__gte" if name == "since" else "created_at__lt": _time(raw, now)})
    # min_latency_ms
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"Not a number: {raw!r}.") from None
    if not value >= 0:
        raise ValueError("Must be zero or more.")
    return Q(latency_ms__gte=value)


def _statuses(raw: str) -> Q:
    """`429`, `500,502`, `5xx`, or a mix (`4xx,503`)."""
    codes: set[int] = set()
    classes: set[int] = set()
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts or len(parts) > MAX_STATUSES:
        raise ValueError(
            f"Give 1 to {MAX_STATUSES} statuses, comma-separated: 429, 500,502 or 5xx."
        )
    for part in parts:
        if STATUS_CLASS_RE.match(part):
            classes.add(int(part[0]))
        elif part.isdigit() and 100 <= int(part) <= 599:
            codes.add(int(part))
        else:
            raise ValueError(f"Not an HTTP status or class: {part!r} (e.g. 429, 5xx).")
    match = Q(status__in=sorted(codes)) if codes else Q(pk__in=[])
    for c in sorted(classes):
        match |= Q(status__gte=c * 100, status__lte=c * 100 + 99)
    return match


def _boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(f"Not a boolean: {raw!r} (true or false).")


def _time(raw: str, now: datetime) -> datetime:
    """An ISO 8601 time (a naive one is UTC) or an age such as 15m, 2h, 7d."""
    relative = RELATIVE_RE.match(raw)
    if relative:
        return now - timedelta(**{UNITS[relative.group(2)]: int(relative.group(1))})
    try:
        parsed = parse_datetime(raw.replace(" ", "+"))  # a '+' not URL-encoded arrives as ' '
    except ValueError:
        parsed = None
    if parsed is None:
        raise ValueError(
            f"Not a time: {raw!r}. Use ISO 8601 (2026-12-03T09:30:00Z) or an age (15m, 2h, 7d)."
        )
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=now.tzinfo)
    return parsed
