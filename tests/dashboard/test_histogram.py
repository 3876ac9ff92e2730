"""Percentiles read off bucket counts (dashboard.histogram): pure, no database."""

from __future__ import annotations

import math
import random

import pytest

from dashboard.histogram import (
    BOUNDS,
    BUCKETS,
    Stats,
    bucket_of,
    bucket_range,
    merge,
    percentile,
)


def counts_of(values: list[float]) -> list[int]:
    counts = [0] * BUCKETS
    for v in values:
        counts[bucket_of(v)] += 1
    return counts


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def test_bucket_edges_are_lower_inclusive() -> None:
    assert bucket_of(0) == 0
    assert bucket_of(9.999) == 0
    assert bucket_of(10) == 1
    assert bucket_of(BOUNDS[-1] - 0.001) == len(BOUNDS) - 1
    assert bucket_of(BOUNDS[-1]) == len(BOUNDS)
    assert bucket_range(len(BOUNDS)) == (float(BOUNDS[-1]), None)


def test_nothing_counted_has_no_percentile() -> None:
    assert percentile([0] * BUCKETS, 0.99) is None


@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_log_normal_latencies_within_their_bucket(q: float) -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(math.log(800), 0.6) for _ in range(20_000)]
    estimate = percentile(counts_of(values), q, max(values))
    truth = exact(values, q)
    assert estimate is not None
    low, high = bucket_range(bucket_of(truth))
    # Interpolated inside the true value's bucket (or at its edge).
    assert low <= estimate <= (high if high is not None else max(values))
    assert abs(estimate - truth) / truth < 0.2


def test_all_in_one_bucket_interpolates_linearly() -> None:
    counts = [0] * BUCKETS
    counts[bucket_of(150)] = 100  # [150, 200)
    assert percentile(counts, 0.5) == pytest.approx(175)
    assert percentile(counts, 0.99) == pytest.approx(199.5)


def test_the_last_bucket_closes_at_the_largest_value() -> None:
    counts = [0] * BUCKETS
    counts[-1] = 10
    assert percentile(counts, 0.5, max_value=130_000) == pytest.approx(125_000)
    assert percentile(counts, 1.0, max_value=130_000) == pytest.approx(130_000)


def test_the_largest_value_caps_every_answer() -> None:
    counts = counts_of([300.0, 301.0, 302.0])  # bucket [300, 400)
    value = percentile(counts, 0.99, max_value=302.0)
    assert value == 302.0


def test_merge_adds_counts_and_keeps_maxima() -> None:
    a = Stats(
        requests=3,
        errors=1,
        latency=tuple(counts_of([5, 50])),
        latency_max=50.0,
        gen_tokens=100,
        gen_ms=2000.0,
    )
    b = Stats(
        requests=2,
        errors=0,
        latency=tuple(counts_of([5000])),
        latency_max=5000.0,
        gen_tokens=50,
        gen_ms=500.0,
    )
    both = merge([a, b])
    assert both.requests == 5 and both.errors == 1
    assert sum(both.latency) == 3
    assert both.latency_max == 5000.0
    assert both.error_rate == pytest.approx(0.2)
    assert both.tokens_per_s == pytest.approx(150 / 2.5)
    assert merge([]).error_rate is None and merge([]).tokens_per_s is None
