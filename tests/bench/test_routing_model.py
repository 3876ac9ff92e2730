"""The routing benchmark's pure pieces: workload, capacity, the ideal router's node model."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from bench.routing_model import (
    OUTPUT_CHOICES,
    PROMPT_RANGE,
    NodeModel,
    capacity_rps,
    choose_least_finish,
    choose_least_in_flight,
    mean_output_tokens,
    percentile,
    poisson_workload,
    recovered_after,
    service_seconds,
    window_p99,
)


def test_workload_is_seeded_poisson_with_mixed_sizes() -> None:
    workload = poisson_workload(10.0, 200.0, seed=3)
    assert workload == poisson_workload(10.0, 200.0, seed=3)
    assert workload != poisson_workload(10.0, 200.0, seed=4)
    assert 1800 < len(workload) < 2200  # 10/s for 200 s
    assert all(a.at < b.at for a, b in itertools.pairwise(workload))
    assert {r.max_tokens for r in workload} == set(OUTPUT_CHOICES)
    assert all(PROMPT_RANGE[0] <= r.prompt_tokens <= PROMPT_RANGE[1] for r in workload)
    mean = sum(r.max_tokens for r in workload) / len(workload)
    assert mean == pytest.approx(mean_output_tokens(), rel=0.1)


def test_capacity_follows_the_simulators_timing() -> None:
    # 8 sequences on an A10: 30 ms * (1 + 0.15 * 7) per token, plus 0.5 ms per prompt token.
    assert service_seconds(1000, 100, 1.0, 8) == pytest.approx(0.5 + 100 * 0.030 * 2.05)
    one = capacity_rps([1.0], 8)
    assert capacity_rps([1.0, 2.2, 3.8], 8) == pytest.approx(one * 7.0)


def test_a_lone_request_finishes_after_prefill_and_decode() -> None:
    node = NodeModel(factor=2.0, parallel=8)
    assert node.expected_finish(1000, 10, now=0.0) == pytest.approx(0.25 + 10 * 0.015)


def test_running_requests_slow_a_new_one_until_they_finish() -> None:
    node = NodeModel(factor=1.0, parallel=8)
    node.add(1, 0, 10, now=0.0)  # ten tokens left: 0.3 s alone, longer beside another
    finish = node.expected_finish(0, 20, now=0.0)
    # Both decode at 34.5 ms a token until the first is done (10 tokens), then 30 ms.
    assert finish == pytest.approx(10 * 0.0345 + 10 * 0.030)


def test_a_full_node_makes_a_new_request_wait_for_a_slot() -> None:
    node = NodeModel(factor=1.0, parallel=1)
    assert node.add(1, 0, 10, now=0.0)
    assert not node.add(2, 0, 10, now=0.0)
    assert node.expected_finish(0, 10, now=0.0) == pytest.approx(0.9)
    node.complete(1, now=0.3)
    assert node.expected_finish(0, 10, now=0.3) == pytest.approx(0.6)


def test_time_passes_and_a_finished_request_holds_its_slot_until_it_answers() -> None:
    node = NodeModel(factor=1.0, parallel=1)
    node.add(1, 0, 10, now=0.0)
    assert node.expected_finish(0, 10, now=0.15) == pytest.approx(0.45)
    # At 1 s the model has it done, but its answer has not come: it is about to free the slot.
    assert node.expected_finish(0, 10, now=1.0) == pytest.approx(0.3)
    assert len(node.running) == 1


def test_ideal_choice_weighs_speed_against_queue() -> None:
    slow, fast = NodeModel(1.0, 1), NodeModel(4.0, 1)
    assert choose_least_finish([slow, fast], 0, 100, now=0.0) == 1
    fast.add(1, 0, 1000, now=0.0)  # busy for 7.5 s
    assert choose_least_finish([slow, fast], 0, 100, now=0.0) == 0
    fast.set_factor(0.5, now=0.0)
    assert fast.expected_finish(0, 1, now=0.0) == pytest.approx(1000 * 0.06 + 0.06)


def test_least_in_flight_ignores_speed_and_waits_when_full() -> None:
    rng = random.Random(0)
    assert choose_least_in_flight([3, 1, 2], 8, rng) == 1
    assert choose_least_in_flight([8, 8, 7], 8, rng) == 2
    assert choose_least_in_flight([8, 8, 8], 8, rng) == -1
    assert {choose_least_in_flight([0, 0], 8, rng) for _ in range(50)} == {0, 1}


def test_percentiles_windows_and_recovery() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(range(1, 101)), 99) == 99
    assert math.isnan(percentile([], 99))
    samples = [(0.5, 1.0), (1.5, 5.0), (1.7, 2.0), (9.0, 7.0)]
    assert window_p99(samples, 0.0, 1.0, 3)[:2] == [1.0, 5.0]
    assert math.isnan(window_p99(samples, 0.0, 1.0, 3)[2])
    assert recovered_after([2.0, 1.1, 1.3, 1.0, 1.1], 10.0, 1.2) == 30.0
    assert recovered_after([1.0, math.nan, 1.1], 10.0, 1.2) == 0.0
    assert recovered_after([1.0, 1.5], 10.0, 1.2) is None
