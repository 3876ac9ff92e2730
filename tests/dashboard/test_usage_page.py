"""The keys & usage page: requests, tokens and errors per key."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dashboard import rollups
from dashboard.analytics import UsageReport
from gateway.services import apikey_create
from tests.dashboard.analytics_world import add_rows, log_row

pytestmark = pytest.mark.django_db
URL = reverse("dashboard:usage")


def test_each_key_with_its_name_requests_tokens_and_errors(
    admin_client: Client, django_assert_num_queries: Any
) -> None:
    bot = apikey_create(name="support-bot").key
    now = timezone.now()
    rows = [log_row(now - timedelta(minutes=2), key_prefix=bot.prefix) for _ in range(8)]
    rows += [
        log_row(
            now - timedelta(minutes=2), key_prefix=bot.prefix, status=500, completion_tokens=None
        )
    ]
    rows += [log_row(now - timedelta(minutes=3), key_prefix="", subject="ann")]
    rows += [log_row(now - timedelta(minutes=4), key_prefix=f"gone{i:04d}") for i in range(8)]
    add_rows(*rows)
    rollups.refresh()
    add_rows(log_row(now - timedelta(minutes=1), key_prefix=bot.prefix))  # the live tail
    # session, user, the watermark, per key and per key and minute from the rollups and
    # from the tail, the keys' names
    with django_assert_num_queries(8):
        response = admin_client.get(URL, {"window": "15m"})
    report: UsageReport = response.context["report"]
    first = report.keys[0]
    assert (first.prefix, first.name, first.requests, first.errors) == (
        bot.prefix,
        "support-bot",
        10,
        1,
    )
    assert first.completion_tokens == 9 * 70 and first.prompt_tokens == 100
    sso = next(k for k in report.keys if k.prefix == "")
    assert sso.name == "single sign-on tokens"
    assert next(k for k in report.keys if k.prefix == "gone0000").name == "(deleted key)"
    # The chart: six busiest keys by name, the other three as "other"; errors per point.
    assert len(report.requests) == 7 and "other" in report.requests
    assert sum(sum(v) for v in report.requests.values()) == 19
    assert sum(report.errors) == 1
    assert bot.prefix in response.content.decode()


def test_the_week_reads_the_rollups(admin_client: Client) -> None:
    now = timezone.now()
    add_rows(*(log_row(now - timedelta(days=2), key_prefix="k1") for _ in range(4)))
    rollups.refresh()
    report: UsageReport = admin_client.get(URL, {"window": "7d"}).context["report"]
    assert [(k.prefix, k.requests) for k in report.keys] == [("k1", 4)]
    assert sum(report.requests["k1"]) == 4
