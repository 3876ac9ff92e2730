from __future__ import annotations

from nodes.choices import NodeState
from nodes.statemachine import Health, Thresholds, after_probe


def run(state: str, results: list[bool]) -> Health:
    health = Health(state, 0, 0)
    for ok in results:
        health = after_probe(health, ok)
    return health


def test_ready_turns_degraded_after_three_failures_not_before() -> None:
    assert run(NodeState.READY, [False, False]).state == NodeState.READY
    assert run(NodeState.READY, [False] * 3).state == NodeState.DEGRADED


def test_degraded_turns_down_after_more_failures() -> None:
    assert run(NodeState.READY, [False] * 5).state == NodeState.DEGRADED
    assert run(NodeState.READY, [False] * 6).state == NodeState.DOWN


def test_a_success_resets_the_failure_count() -> None:
    assert run(NodeState.READY, [False, False, True, False, False]).state == NodeState.READY


def test_recovery_needs_consecutive_successes() -> None:
    degraded = run(NodeState.READY, [False] * 3)
    one = after_probe(degraded, True)
    assert one.state == NodeState.DEGRADED
    assert after_probe(one, True).state == NodeState.READY


def test_unknown_node_is_ready_on_first_success_and_down_when_it_never_answers() -> None:
    assert run(NodeState.UNKNOWN, [True]).state == NodeState.READY
    assert run(NodeState.UNKNOWN, [False] * 3).state == NodeState.DOWN


def test_thresholds_are_configurable() -> None:
    strict = Thresholds(degrade_after=1, down_after=2, recover_after=1)
    health = after_probe(Health(NodeState.READY, 0, 0), False, strict)
    assert health.state == NodeState.DEGRADED
    assert after_probe(health, False, strict).state == NodeState.DOWN
    assert after_probe(health, True, strict).state == NodeState.READY
