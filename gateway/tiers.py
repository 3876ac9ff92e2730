"""Degradation tiers: which one the cluster's error rate selects, with hysteresis so a rate
hovering at a threshold does not flap. Pure functions over plain data; `gateway.degradation`
feeds them the window read from Redis and applies the result.

A tier is entered as soon as the rate reaches its threshold (things getting worse are acted
on at the next tick), and left only when the rate has fallen below the threshold minus a
margin and the tier has held for a minimum dwell time. A window with too few requests says
nothing about the cluster: it counts as a rate of zero, so a quiet cluster is normal."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Tier(IntEnum):
    NORMAL = 0
    CACHE = 1  # a failed request gets a cached answer to the same request, when there is one
    DOWNGRADE = 2  # requests for a profile with a fallback go to the fallback
    STATIC = 3  # a failed request gets the profile's configured answer, or 503

    @property
    def label(self) -> str:
        return self.name.lower()


TIER_CHOICES = [(tier.value, f"{tier.value} ({tier.label})") for tier in Tier]


@dataclass(frozen=True, slots=True)
class TierPolicy:
    # The error rate (0..1) at which tiers 1, 2 and 3 are entered, ascending.
    thresholds: tuple[float, float, float] = (0.05, 0.15, 0.30)
    margin: float = 0.02  # a tier is left only below its threshold minus this
    min_requests: int = 20  # fewer requests in the window: treated as no errors
    min_dwell_s: float = 30.0  # a tier holds at least this long before it is left


@dataclass(frozen=True, slots=True)
class Window:
    """The cluster's requests and failures over the sliding window, all gateway processes."""

    requests: int
    failures: int

    @property
    def rate(self) -> float:
        return self.failures / self.requests if self.requests > 0 else 0.0


# Rates are compared with this much give: 0.05 - 0.02 is 0.030000000000000002 in floats, and a
# rate of exactly 3 % must still hold tier 1.
EPSILON = 1e-9


def _reaches(rate: float, bound: float) -> bool:
    return rate + EPSILON >= bound


def _entered(rate: float, policy: TierPolicy) -> Tier:
    """The tier a rate selects coming from below: the highest whose threshold it reaches."""
    tier = Tier.NORMAL
    for number, threshold in enumerate(policy.thresholds, start=1):
        if _reaches(rate, threshold):
            tier = Tier(number)
    return tier


def _held(rate: float, policy: TierPolicy, below: Tier) -> Tier:
    """The highest tier under `below` that a rate keeps once in it (threshold minus margin)."""
    for number in range(below - 1, 0, -1):
        if _reaches(rate, policy.thresholds[number - 1] - policy.margin):
            return Tier(number)
    return Tier.NORMAL


def select_tier(current: Tier, window: Window, held_s: float, policy: TierPolicy) -> Tier:
    """The tier to be in now, being in `current` for `held_s` seconds."""
    rate = window.rate if window.requests >= policy.min_requests else 0.0
    entered = _entered(rate, policy)
    if entered > current:
        return entered
    if current == Tier.NORMAL:
        return current
    if _reaches(rate, policy.thresholds[current - 1] - policy.margin):
        return current  # still within the tier's band
    if held_s < policy.min_dwell_s:
        return current
    return _held(rate, policy, current)
