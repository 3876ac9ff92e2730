"""An alert as the planes raise it: plain data, JSON both ways (it crosses Celery)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("node_state", "heal", "tier", "readiness", "test")
SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class AlertEvent:
    kind: str  # one of KINDS: which channels want it
    subject: str  # what it is about, e.g. "node:gpu1": the rate limit counts per subject
    severity: str  # info | warning | critical
    title: str
    text: str = ""
    at: float = field(default_factory=time.time)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertEvent:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def node_state(node: str, before: str, after: str, reason: str) -> AlertEvent:
    severity = "info" if after == "READY" else ("critical" if after == "DOWN" else "warning")
    title = f"Node {node} is {after} (was {before})" if after != before else f"Node {node}"
    return AlertEvent(
        kind="node_state",
        subject=f"node:{node}",
        severity=severity if after != before else "warning",
        title=title + (f": {reason}" if after == before else ""),
        text=reason,
        details={"node": node, "before": before, "after": after},
    )


def heal_outcome(node: str, recovered: bool, detail: str) -> AlertEvent:
    return AlertEvent(
        kind="heal",
        subject=f"heal:{node}",
        severity="info" if recovered else "critical",
        title=f"Self-heal of node {node} {'recovered it' if recovered else 'failed'}",
        text=detail,
        details={"node": node, "recovered": recovered},
    )


# As gateway.tiers names them (alerts imports neither plane).
TIER_NAMES = ("normal", "cache", "downgrade", "static")


def tier_change(before: int, after: int, error_rate: float, requests: int) -> AlertEvent:
    """The cluster's degradation tier moved. One subject for every change, so a channel's
    interval holds a flapping tier back and its latest tier is what is sent."""
    severity = "info" if after == 0 else ("critical" if after >= 2 else "warning")
    return AlertEvent(
        kind="tier",
        subject="tier",
        severity=severity,
        title=f"Degradation tier {after} ({TIER_NAMES[after]}), was {before} "
        f"({TIER_NAMES[before]})",
        text=f"Cluster error rate {error_rate:.1%} over {requests} requests in the window.",
        details={"before": before, "after": after, "error_rate": error_rate, "requests": requests},
    )
