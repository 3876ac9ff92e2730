"""State transitions read off a node's probe history (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dashboard.request_stats import rank
from dashboard.transitions import Transition, transitions

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(s: int) -> datetime:
    return T0 + timedelta(seconds=s)


def test_a_transition_is_a_probe_that_left_another_state_than_the_one_before() -> None:
    probes = [(at(20), "DOWN"), (at(15), "DEGRADED"), (at(10), "READY"), (at(5), "READY")]
    assert transitions(probes, current="DOWN", since=at(20)) == [
        Transition(at(20), "DEGRADED", "DOWN"),
        Transition(at(15), "READY", "DEGRADED"),
    ]


def test_a_state_set_after_the_last_probe_shows_as_the_newest_transition() -> None:
    # A warm-up promoted the node to READY after the probe that held it back.
    probes = [(at(10), "DOWN"), (at(5), "DOWN")]
    assert transitions(probes, current="READY", since=at(30)) == [
        Transition(at(30), "DOWN", "READY")
    ]


def test_no_probes_no_transitions() -> None:
    assert transitions([], current="UNKNOWN", since=None) == []


def test_percentile_ranks_are_nearest_rank() -> None:
    assert [rank(p, 100) for p in (0.5, 0.95, 0.99)] == [49, 94, 98]
    assert rank(0.99, 1) == 0 and rank(0.5, 3) == 1
