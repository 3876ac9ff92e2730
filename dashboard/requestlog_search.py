"""The request-log page's search box and keyset cursor (pure: no database).

The search box takes what an operator has at hand and matches it exactly, so every search
uses an index at millions of rows: a request id (`req-` and 24 hex digits), a key (`ck-…` or its
prefix), an HTTP status or class (`503`, `5xx`), or else a model, node or key prefix."""

from __future__ import annotations

import base64
import re
from datetime import datetime

from django.db.models import Q
from django.utils.dateparse import parse_datetime

REQUEST_ID_RE = re.compile(r"^(req-)?[0-9a-f]{24}$|^gen\w*-\d+$")
STATUS_RE = re.compile(r"^([1-5]\d\d|[1-5]xx)$")


def search(q: str) -> Q:
    """The rows a search box text matches; Q() for an empty box."""
    text = q.strip()
    if not text:
        return Q()
    if REQUEST_ID_RE.match(text):
        return Q(request_id=text)
    if text.startswith("ck-"):
        return Q(key_prefix=text.removeprefix("ck-").split("-", 1)[0])
    if STATUS_RE.match(text):
        if text.endswith("xx"):
            low = int(text[0]) * 100
            return Q(status__gte=low, status__lte=low + 99)
        return Q(status=int(text))
    return Q(model=text) | Q(node=text) | Q(key_prefix=text) | Q(request_id=text)


def encode_cursor(created_at: datetime, row_id: int) -> str:
    raw = f"{created_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int] | None:
    """(created_at, id) of the last row of the previous page; None for a cursor that is not
    one of ours (the page then starts at the newest row)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, row_id = raw.rsplit("|", 1)
        moment = parse_datetime(when)
        return (moment, int(row_id)) if moment is not None else None
    except (ValueError, UnicodeDecodeError):
        return None


def after(cursor: tuple[datetime, int]) -> Q:
    """Rows that come after the cursor's row, newest first: older, or as old with a
    smaller id."""
    created_at, row_id = cursor
    return Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=row_id)
