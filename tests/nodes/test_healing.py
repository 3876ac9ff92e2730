from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nodes.healing import HealPolicy, decide

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
POLICY = HealPolicy(max_per_hour=3, backoff_s=60)


def run(attempts: list[datetime], **kw: bool) -> tuple[bool, str]:
    args = {"has_command": True, "agent_alive": True} | kw
    d = decide(now=NOW, attempts=attempts, node_name="gpu1", policy=POLICY, **args)
    return d.restart, d.reason


def test_first_attempt_is_allowed() -> None:
    assert run([]) == (True, "")


def test_needs_a_command_and_an_agent() -> None:
    assert run([], has_command=False)[1] == "no restart command is configured for this node"
    restart, reason = run([], agent_alive=False)
    assert not restart and "clawdbot agent --node gpu1" in reason


def test_backoff_doubles_after_each_attempt() -> None:
    assert not run([NOW - timedelta(seconds=30)])[0]
    assert run([NOW - timedelta(seconds=61)])[0]
    two = [NOW - timedelta(seconds=300), NOW - timedelta(seconds=100)]
    restart, reason = run(two)
    assert not restart and "after 120 s" in reason
    assert run([NOW - timedelta(seconds=400), NOW - timedelta(seconds=121)])[0]


def test_at_most_n_per_hour_and_old_attempts_do_not_count() -> None:
    three = [NOW - timedelta(minutes=m) for m in (50, 40, 30)]
    restart, reason = run(three)
    assert not restart and "3 restarts in the last hour (limit 3)" in reason
    assert run([NOW - timedelta(minutes=m) for m in (70, 65, 61)])[0]
