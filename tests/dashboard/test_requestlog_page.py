"""The request-log page: exact-match search, filters, a keyset cursor, times to the second."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dashboard.requestlog_search import decode_cursor, encode_cursor, search
from tests.dashboard.analytics_world import add_rows, log_row

URL = reverse("dashboard:requests")


def ids_on(page: str) -> list[str]:
    return re.findall(r'<td class="c-id" title="(req-[0-9a-f]{24})"', page)


def test_search_text_means_an_exact_match() -> None:
    rid = "req-0123456789abcdef01234567"
    assert str(search(rid)) == f"(AND: ('request_id', '{rid}'))"
    assert str(search("ck-abcd1234-secret")) == "(AND: ('key_prefix', 'abcd1234'))"
    assert str(search("503")) == "(AND: ('status', 503))"
    assert str(search("5xx")) == "(AND: ('status__gte', 500), ('status__lte', 599))"
    assert "('node', 'gpu1')" in str(search(" gpu1 "))
    assert str(search("")) == "(AND: )"


def test_a_cursor_survives_the_round_trip_and_a_bad_one_is_ignored() -> None:
    now = timezone.now()
    assert decode_cursor(encode_cursor(now, 42)) == (now, 42)
    assert decode_cursor("not-a-cursor") is None
    assert decode_cursor("") is None


@pytest.mark.django_db
def test_pages_follow_a_keyset_cursor_newest_first(
    admin_client: Client, django_assert_num_queries: Any
) -> None:
    now = timezone.now().replace(microsecond=0)
    # 120 rows, several per second: the cursor must break ties by id.
    add_rows(*(log_row(now - timedelta(seconds=i // 3)) for i in range(120)))
    seen: list[str] = []
    url = URL
    pages = 0
    while url:
        with django_assert_num_queries(3):  # session, user, the page
            response = admin_client.get(url)
        page = response.content.decode()
        seen += ids_on(page)
        pages += 1
        match = re.search(r'rel="next" href="\?([^"]+)"', page)
        url = f"{URL}?{match.group(1).replace('&amp;', '&')}" if match else ""
    assert pages == 3
    assert len(seen) == 120 and len(set(seen)) == 120
    created = [r.created_at for r in response.context["rows"]]
    assert created == sorted(created, reverse=True)


@pytest.mark.django_db
def test_search_and_filters(admin_client: Client) -> None:
    now = timezone.now().replace(microsecond=0)
    rows = add_rows(
        log_row(now - timedelta(seconds=5), model="a", node="gpu1", status=200),
        log_row(
            now - timedelta(seconds=4),
            model="b",
            node="gpu2",
            status=503,
            error_code="upstream_error",
            error_message="node said no",
        ),
        log_row(now - timedelta(minutes=30), model="a", node="gpu2", status=429),
    )

    def found(**params: str) -> list[str]:
        return ids_on(admin_client.get(URL, params).content.decode())

    assert found(q=rows[0].request_id) == [rows[0].request_id]
    assert found(q="5xx") == [rows[1].request_id]
    assert found(q="gpu2") == [rows[1].request_id, rows[2].request_id]
    assert found(model="a", since="10m") == [rows[0].request_id]
    assert found(status="4xx,5xx") == [rows[1].request_id, rows[2].request_id]
    page = admin_client.get(URL, {"q": "5xx"}).content.decode()
    assert (now - timedelta(seconds=4)).strftime("%Y-%m-%d %H:%M:%S") in page  # to the second
    assert "upstream_error: node said no" in page


@pytest.mark.django_db
def test_a_bad_filter_is_named_not_ignored(admin_client: Client) -> None:
    add_rows(log_row(timezone.now()))
    response = admin_client.get(URL, {"status": "9000", "since": "yesterday"})
    assert response.status_code == 200
    errors = response.context["errors"]
    assert set(errors) == {"status", "since"}
    assert ids_on(response.content.decode()) == []
