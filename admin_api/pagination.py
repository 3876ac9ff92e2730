"""Paging for /api lists. DRF's paginators ignore a bad `limit` and answer a bad cursor with
404; here both are 400s that say what is accepted."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination, LimitOffsetPagination
from rest_framework.request import Request

from gateway.errors import GatewayError

MAX_LIMIT = 1000


def _limit(request: Request, default: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise GatewayError(
            400,
            f"Invalid value for 'limit': {raw!r}; give a whole number from 1 to {MAX_LIMIT}.",
            param="limit",
            code="invalid_value",
        )
    return int(raw)


class LimitPages(LimitOffsetPagination):
    """`?limit=N&offset=M` (default 100): for the configuration lists, which stay small."""

    default_limit = 100
    max_limit = MAX_LIMIT

    def get_limit(self, request: Request) -> int:
        return _limit(request, self.default_limit)

    def get_offset(self, request: Request) -> int:
        raw = request.query_params.get("offset")
        if raw is None or raw == "":
            return 0
        if not raw.isdigit():
            raise GatewayError(
                400,
                f"Invalid value for 'offset': {raw!r}; give a whole number, 0 or more.",
                param="offset",
                code="invalid_value",
            )
        return int(raw)


class RequestLogPages(CursorPagination):
    """`?limit=N` and the `next`/`previous` links: a cursor stays fast and stable at millions
    of rows while new requests are being logged, where an offset would slow down and shift."""

    ordering = ("-created_at", "-id")
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = MAX_LIMIT

    def get_page_size(self, request: Request) -> int:
        return _limit(request, self.page_size)

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> Any:
        try:
            return super().paginate_queryset(queryset, request, view)
        except NotFound:
            raise GatewayError(
                400,
                "Invalid value for 'cursor': use the `next` or `previous` link of an earlier "
                "answer as it is.",
                param="cursor",
                code="invalid_value",
            ) from None
