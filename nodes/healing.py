"""Whether to restart a node's backend now: a pure decision over the recent attempts, so a
node that keeps failing is not restarted in a loop."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class HealPolicy:
    max_per_hour: int = 3
    backoff_s: float = 60.0  # wait after the first attempt; doubles after each further one


@dataclass(frozen=True, slots=True)
class HealDecision:
    restart: bool
    reason: str


def decide(
    *,
    now: datetime,
    attempts: list[datetime],
    has_command: bool,
    agent_alive: bool,
    node_name: str,
    policy: HealPolicy,
) -> HealDecision:
    if not has_command:
        return HealDecision(False, "no restart command is configured for this node")
    if not agent_alive:
        return HealDecision(
            False,
            f"no agent is running for this node: start `clawdbot agent --node {node_name}` "
            "on its GPU host",
        )
    recent = sorted(t for t in attempts if now - t < timedelta(hours=1))
    if len(recent) >= policy.max_per_hour:
        return HealDecision(
            False,
            f"{len(recent)} restarts in the last hour (limit {policy.max_per_hour}); "
            "not restarting again: look at the node",
        )
    if recent:
        wait = timedelta(seconds=policy.backoff_s * 2 ** (len(recent) - 1))
        since = now - recent[-1]
        if since < wait:
            return HealDecision(
                False,
                f"backing off: last restart {since.total_seconds():.0f} s ago, "
                f"next one allowed after {wait.total_seconds():.0f} s",
            )
    return HealDecision(True, "")
