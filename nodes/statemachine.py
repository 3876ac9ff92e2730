"""The node health state machine, as a pure function over plain data."""

from __future__ import annotations

from dataclasses import dataclass

from nodes.choices import NodeState


@dataclass(frozen=True, slots=True)
class Thresholds:
    degrade_after: int = 3  # consecutive failures: READY → DEGRADED
    down_after: int = (
        6  # consecutive failures: DEGRADED → DOWN (and UNKNOWN → DOWN at degrade_after)
    )
    recover_after: int = 2  # consecutive successes: DEGRADED/DOWN → READY


@dataclass(frozen=True, slots=True)
class Health:
    state: str
    consecutive_failures: int
    consecutive_successes: int


def after_probe(current: Health, ok: bool, thresholds: Thresholds = Thresholds()) -> Health:
    """The node's health after one probe result."""
    if ok:
        successes = current.consecutive_successes + 1
        state = current.state
        if state == NodeState.UNKNOWN or (
            state in (NodeState.DEGRADED, NodeState.DOWN) and successes >= thresholds.recover_after
        ):
            state = NodeState.READY
        return Health(state=state, consecutive_failures=0, consecutive_successes=successes)

    failures = current.consecutive_failures + 1
    state = current.state
    if state == NodeState.READY and failures >= thresholds.degrade_after:
        state = NodeState.DEGRADED
    elif state == NodeState.DEGRADED and failures >= thresholds.down_after:
        state = NodeState.DOWN
    elif state == NodeState.UNKNOWN and failures >= thresholds.degrade_after:
        # A node that never answered has no traffic to move: it is simply down.
        state = NodeState.DOWN
    return Health(state=state, consecutive_failures=failures, consecutive_successes=0)
