"""The request-log page: search, filters, times to the second, a keyset cursor."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from admin_api.errors import FieldErrors
from admin_api.requestlog_query import parse_filters
from dashboard.access import staff_page
from dashboard.requestlog_search import after, decode_cursor, encode_cursor, search
from gateway.models import RequestLog

PAGE = 50
# The filter form's fields, passed to the management API's parser (GET /api/requests).
FILTERS = ("status", "model", "node", "key", "since", "until")
COLUMNS = (
    "id",
    "request_id",
    "created_at",
    "key_prefix",
    "subject",
    "model",
    "served_model",
    "node",
    "status",
    "stream",
    "latency_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "attempts",
    "error_code",
    "error_message",
    "degraded",
)


@staff_page
def requests(request: HttpRequest) -> HttpResponse:
    params = {name: request.GET[name] for name in FILTERS if request.GET.get(name, "").strip()}
    errors: dict[str, list[str]] = {}
    rows = RequestLog.objects.only(*COLUMNS).order_by("-created_at", "-id")
    try:
        rows = rows.filter(parse_filters(params, timezone.now()))
    except FieldErrors as exc:
        errors = exc.fields
    q = request.GET.get("q", "")
    rows = rows.filter(search(q))
    cursor = decode_cursor(request.GET.get("cursor", ""))
    if cursor is not None:
        rows = rows.filter(after(cursor))
    page = [] if errors else list(rows[: PAGE + 1])
    more = len(page) > PAGE
    page = page[:PAGE]
    next_query = None
    if more:
        query = request.GET.copy()
        query["cursor"] = encode_cursor(page[-1].created_at, page[-1].id)
        next_query = query.urlencode()
    first_query = None
    if cursor is not None:
        query = request.GET.copy()
        query.pop("cursor", None)
        first_query = query.urlencode()
    return render(
        request,
        "dashboard/requests.html",
        {
            "rows": page,
            "errors": errors,
            "q": q,
            "filters": {name: request.GET.get(name, "") for name in FILTERS},
            "next_query": next_query,
            "first_query": first_query,
            "paged": cursor is not None,
        },
    )
