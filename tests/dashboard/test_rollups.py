"""The request-log rollups (dashboard.rollups): what a refresh writes, against the log."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.db.models import Sum
from django.utils import timezone

from dashboard import rollups
from dashboard.histogram import BUCKETS, LATENCY_FIELDS, TTFT_FIELDS, bucket_of
from dashboard.models import Grain, KeyUsageRollup, LatencyRollup, RollupWatermark
from dashboard.tasks import refresh_rollups
from tests.dashboard.analytics_world import add_rows, log_row

pytestmark = pytest.mark.django_db


@pytest.fixture
def hour_ago() -> datetime:
    """The start of an hour's second quarter, an hour or two back: every row below is in the
    past and in that hour."""
    return (timezone.now() - timedelta(hours=2)).replace(minute=15, second=0, microsecond=0)


def test_a_refresh_counts_each_quarter_hour_model_node_and_status(hour_ago: datetime) -> None:
    add_rows(
        log_row(hour_ago + timedelta(seconds=5), latency_ms=12.0, ttft_ms=5.0),
        log_row(hour_ago + timedelta(seconds=40), latency_ms=2500.0, ttft_ms=450.0),
        log_row(
            hour_ago + timedelta(seconds=50),
            status=503,
            latency_ms=3.0,
            ttft_ms=None,
            completion_tokens=None,
            key_prefix="other999",
        ),
        log_row(hour_ago + timedelta(minutes=16), node="gpu2", latency_ms=130_000.0),
    )
    done = rollups.refresh()
    assert done.rows == 4
    ok = LatencyRollup.objects.get(grain=Grain.QUARTER, start=hour_ago, status=200)
    assert (ok.model, ok.node, ok.requests) == ("qwen3-32b", "gpu1", 2)
    latency = [getattr(ok, f) for f in LATENCY_FIELDS]
    expected = [0] * BUCKETS
    expected[bucket_of(12.0)] += 1
    expected[bucket_of(2500.0)] += 1
    assert latency == expected
    ttft = [getattr(ok, f) for f in TTFT_FIELDS]
    assert ttft[bucket_of(5.0)] == 1 and ttft[bucket_of(450.0)] == 1 and sum(ttft) == 2
    assert ok.latency_max == 2500.0 and ok.ttft_max == 450.0
    assert ok.completion_tokens == 140 and ok.gen_tokens == 140
    assert ok.gen_ms == pytest.approx((12 - 5) + (2500 - 450))
    refused = LatencyRollup.objects.get(grain=Grain.QUARTER, start=hour_ago, status=503)
    assert refused.requests == 1 and refused.ttft_max is None and refused.gen_tokens == 0
    assert refused.latency_max == 0 and not any(getattr(refused, f) for f in LATENCY_FIELDS)
    slow = LatencyRollup.objects.get(grain=Grain.QUARTER, node="gpu2")
    assert slow.start == hour_ago + timedelta(minutes=15)
    assert getattr(slow, LATENCY_FIELDS[-1]) == 1
    # The hour row is the sum of its quarters.
    hour = LatencyRollup.objects.get(grain=Grain.HOUR, node="gpu1", status=200)
    assert hour.start == hour_ago.replace(minute=0)
    assert hour.requests == 2 and hour.latency_max == 2500.0
    keys = {
        (k.grain, k.key_prefix): (k.requests, k.errors, k.completion_tokens)
        for k in KeyUsageRollup.objects.all()
    }
    assert keys[(Grain.HOUR, "abcd1234")] == (3, 0, 210)
    assert keys[(Grain.HOUR, "other999")] == (1, 1, 0)
    assert keys[(Grain.QUARTER, "other999")] == (1, 1, 0)


def test_running_it_again_changes_nothing(hour_ago: datetime) -> None:
    add_rows(*(log_row(hour_ago + timedelta(seconds=s)) for s in range(0, 60, 10)))
    rollups.refresh()
    before = list(LatencyRollup.objects.values().order_by("grain", "start"))
    again = rollups.refresh()
    assert again.rows == 0
    assert list(LatencyRollup.objects.values().order_by("grain", "start")) == before


def test_a_late_row_reopens_only_its_own_quarter_hour(hour_ago: datetime) -> None:
    add_rows(
        log_row(hour_ago + timedelta(seconds=1)),
        log_row(hour_ago + timedelta(minutes=20)),
    )
    rollups.refresh()
    untouched = LatencyRollup.objects.get(
        grain=Grain.QUARTER, start=hour_ago + timedelta(minutes=15)
    )
    # A row flushed late (after a database outage) for the first quarter-hour.
    add_rows(log_row(hour_ago + timedelta(seconds=30), latency_ms=40.0))
    done = rollups.refresh()
    assert done.rows == 1 and done.since == hour_ago
    first = LatencyRollup.objects.get(grain=Grain.QUARTER, start=hour_ago)
    assert first.requests == 2
    assert LatencyRollup.objects.get(pk=untouched.pk).requests == 1  # not recomputed
    hour = LatencyRollup.objects.filter(grain=Grain.HOUR).aggregate(n=Sum("requests"))
    assert hour["n"] == 3
    assert RollupWatermark.objects.get(pk=1).last_id > 0


def test_the_task_drops_quarter_hour_rows_no_page_reads(hour_ago: datetime) -> None:
    three_days = hour_ago - timedelta(days=3)
    add_rows(log_row(three_days), log_row(hour_ago))
    assert refresh_rollups() == 2
    quarters = LatencyRollup.objects.filter(grain=Grain.QUARTER)
    assert [q.start for q in quarters] == [hour_ago]
    assert LatencyRollup.objects.filter(grain=Grain.HOUR).count() == 2
