"""What routing has learned of conversations and of the nodes' prefix caches (the ADMIT and
RELEASE scripts keep it in Redis), read back for /metrics and the admin. Pure.

    clawdbot:convstats       hash: c1, e1 (first turns continued, ended without a next
                             turn), c2, e2 (the same for later turns), decaying counts; gap
                             (the users' mean pause between turns, ms)
    clawdbot:pcache:<node>   hash: flow, rate (tokens taken into the node's prefix cache,
                             in all and per ms, fading over CACHE_TAU_MS), t; cap (the tokens
                             it holds, once a lost prefix has shown it); occ, ot (its slots'
                             recent average use)

The priors mirror ADMIT's (tests/nodes/test_conversations_learned.py checks the script
still says the same)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# (prior share continued, the turns that prior weighs as): first turns, later turns.
CONTINUE_PRIORS = ((0.0, 1.0), (0.8, 4.0))
GAP_PRIOR_MS = 10_000
CACHE_TAU_MS = 10_000
MAX_CONTINUE = 0.98


@dataclass(frozen=True, slots=True)
class Conversations:
    first_continue: float  # the chance a first turn gets a next one
    later_continue: float  # the chance a later turn does
    pause_s: float  # the users' mean pause between turns


@dataclass(frozen=True, slots=True)
class PrefixCache:
    holds_tokens: float | None  # None until a prefix the node lost has shown it
    intake_tps: float  # tokens it takes in per second, now
    slots_busy: float  # its slots in use, on average of late

    def describe(self) -> str:
        held = (
            f"holds about {self.holds_tokens:,.0f} tokens"
            if self.holds_tokens is not None
            else "size not learned yet (learned once the server answers without a prefix)"
        )
        return (
            f"{held}; takes in {self.intake_tps:,.0f} tokens/s; "
            f"{self.slots_busy:.1f} slots busy on average"
        )


def _number(fields: Mapping[Any, Any], name: str) -> float | None:
    raw = fields.get(name.encode(), fields.get(name))
    try:
        value = float(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and math.isfinite(value) else None


def conversations(fields: Mapping[Any, Any]) -> Conversations:
    """The hash as ADMIT reads it, priors included (an empty hash gives the priors)."""
    shares = []
    for kind, (prior, weight) in enumerate(CONTINUE_PRIORS, start=1):
        continued = _number(fields, f"c{kind}") or 0.0
        ended = _number(fields, f"e{kind}") or 0.0
        share = (continued + prior * weight) / (continued + ended + weight)
        shares.append(min(share, MAX_CONTINUE))
    gap = max(_number(fields, "gap") or GAP_PRIOR_MS, 100.0)
    return Conversations(shares[0], shares[1], gap / 1000)


def prefix_cache(fields: Mapping[Any, Any], now_ms: float) -> PrefixCache | None:
    """None when routing has not seen the node take a followed prompt yet."""
    rate = _number(fields, "rate")
    if rate is None:
        return None
    at = _number(fields, "t") or now_ms
    fading = math.exp(-max(now_ms - at, 0.0) / CACHE_TAU_MS)
    return PrefixCache(
        holds_tokens=_number(fields, "cap"),
        intake_tps=rate * fading * 1000,
        slots_busy=_number(fields, "occ") or 0.0,
    )
