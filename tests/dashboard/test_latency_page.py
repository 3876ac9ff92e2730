"""The latency page: numbers from the log (short windows) or the rollups (long ones), in a
fixed number of queries."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dashboard import rollups
from dashboard.analytics import LatencyReport
from dashboard.histogram import merge
from tests.dashboard.analytics_world import add_rows, log_row

pytestmark = pytest.mark.django_db
URL = reverse("dashboard:latency")


def report_of(client: Client, **params: str) -> LatencyReport:
    response = client.get(URL, params)
    assert response.status_code == 200
    report: LatencyReport = response.context["report"]
    return report


def spread(now: datetime, minutes_ago: float, count: int, **fields: Any) -> list[Any]:
    return [
        log_row(now - timedelta(minutes=minutes_ago, seconds=i % 50), **fields)
        for i in range(count)
    ]


def test_the_last_hour_per_model_and_node_with_statuses(admin_client: Client) -> None:
    now = timezone.now()
    add_rows(
        *spread(now, 5, 90, model="qwen3-32b", node="gpu1", latency_ms=400.0),
        *spread(now, 5, 9, model="qwen3-32b", node="gpu1", latency_ms=9000.0),
        *spread(now, 20, 40, model="llama", node="gpu2", latency_ms=1200.0, ttft_ms=300.0),
        *spread(now, 20, 10, model="llama", node="gpu2", status=503, latency_ms=2.0),
        *spread(now, 90, 50, model="old", node="gpu3"),  # outside the hour
    )
    report = report_of(admin_client, window="1h")
    assert report.overall.requests == 149
    assert report.overall.errors == 10
    assert report.statuses == [(200, 139), (503, 10)]
    assert [g.name for g in report.by_model] == ["qwen3-32b", "llama"]
    assert report.models == ["llama", "qwen3-32b"] and report.nodes == ["gpu1", "gpu2"]
    qwen = report.by_model[0].stats.latency_quantiles()
    assert qwen["p50"] is not None and 300 <= qwen["p50"] < 500  # bucket [300, 400)
    assert qwen["p99"] is not None and qwen["p99"] > 7500  # the slow tenth
    llama = report.by_model[1].stats
    assert llama.error_rate == pytest.approx(0.2)
    # Refusals are counted, not timed: llama's latencies are its 40 answers at 1.2 s.
    assert sum(llama.latency) == 40
    # tokens/s: 70 tokens in (latency - ttft) each
    assert report.by_node[1].stats.tokens_per_s == pytest.approx(70 / 0.9)
    # The 15-minute window sees only the newest rows.
    assert report_of(admin_client, window="15m").overall.requests == 99


def test_a_model_and_node_filter(admin_client: Client) -> None:
    now = timezone.now()
    add_rows(
        *spread(now, 3, 10, model="a", node="gpu1"),
        *spread(now, 3, 5, model="a", node="gpu2"),
        *spread(now, 3, 7, model="b", node="gpu2"),
    )
    report = report_of(admin_client, window="15m", model="a", node="gpu2")
    assert report.overall.requests == 5
    assert sum(p.stats.requests for p in report.points) == 5
    assert report.models == ["a", "b"]  # the filters still offer every choice
    page = admin_client.get(URL, {"window": "15m", "model": "a"}).content.decode()
    assert '<option value="a" selected>' in page


def test_rollups_and_the_live_tail_add_up_without_doubling(admin_client: Client) -> None:
    now = timezone.now()
    add_rows(*spread(now, 180, 30), *spread(now, 60 * 24 * 3, 20, model="older"))
    before = report_of(admin_client, window="24h")  # all of it from the log's tail
    assert before.overall.requests == 30 and before.rolled_up_at is None
    rollups.refresh()
    add_rows(*spread(now, 1, 4, model="newest"))  # after the refresh: the tail
    day = report_of(admin_client, window="24h")
    assert day.overall.requests == 34 and day.rolled_up_at is not None
    assert (
        before.overall.latency == merge(g.stats for g in day.by_model if g.name != "newest").latency
    )
    assert report_of(admin_client, window="15m").overall.requests == 4
    assert sum(p.stats.requests for p in day.points) == 34
    assert all(p.at.minute % 15 == 0 and p.at.second == 0 for p in day.points)
    week = report_of(admin_client, window="7d")
    assert week.overall.requests == 54
    assert sorted(g.name for g in week.by_model) == ["newest", "older", "qwen3-32b"]
    page = admin_client.get(URL, {"window": "7d"}).content.decode()
    assert "a point per hour" in page and 'id="latency-data"' in page


@pytest.mark.parametrize("window", ["15m", "1h", "24h", "7d"])
def test_the_same_queries_for_any_number_of_models_and_nodes(
    admin_client: Client, django_assert_num_queries: Any, window: str
) -> None:
    """session + user, the watermark, then from the rollups and from the live tail each the
    window by model, node and status and the window over time."""
    now = timezone.now()
    for i in range(6):
        add_rows(*spread(now, 2 + i, 5, model=f"m{i}", node=f"gpu{i % 3}"))
    add_rows(*spread(now, 300, 5))
    rollups.refresh()
    add_rows(*spread(now, 1, 5, model="tail"))
    with django_assert_num_queries(7):
        assert admin_client.get(URL, {"window": window}).status_code == 200


def test_an_empty_window_says_how_to_fill_it(admin_client: Client) -> None:
    page = admin_client.get(URL).content.decode()
    assert "No requests in this window" in page
