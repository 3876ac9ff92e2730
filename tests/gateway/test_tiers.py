"""Tier selection with hysteresis, decided without Redis or a clock."""

from __future__ import annotations

import pytest

from gateway.tiers import Tier, TierPolicy, Window, select_tier

POLICY = TierPolicy(thresholds=(0.05, 0.15, 0.30), margin=0.02, min_requests=20, min_dwell_s=30)


def rate(percent: float, requests: int = 1000) -> Window:
    return Window(requests=requests, failures=round(requests * percent / 100))


@pytest.mark.parametrize(
    ("percent", "tier"),
    [
        (0, Tier.NORMAL),
        (4.9, Tier.NORMAL),
        (5, Tier.CACHE),
        (14.9, Tier.CACHE),
        (15, Tier.DOWNGRADE),
        (29.9, Tier.DOWNGRADE),
        (30, Tier.STATIC),
        (100, Tier.STATIC),
    ],
)
def test_from_normal_a_rate_enters_the_tier_whose_threshold_it_reaches(
    percent: float, tier: Tier
) -> None:
    assert select_tier(Tier.NORMAL, rate(percent), held_s=0, policy=POLICY) == tier


def test_worse_is_acted_on_at_once_even_within_the_dwell_time() -> None:
    assert select_tier(Tier.CACHE, rate(40), held_s=0.1, policy=POLICY) == Tier.STATIC


def test_a_tier_is_kept_down_to_its_threshold_minus_the_margin() -> None:
    for percent in (3.0, 4.0, 10.0):
        assert select_tier(Tier.CACHE, rate(percent), held_s=3600, policy=POLICY) == Tier.CACHE
    assert select_tier(Tier.DOWNGRADE, rate(13.0), held_s=3600, policy=POLICY) == Tier.DOWNGRADE
    assert select_tier(Tier.STATIC, rate(28.0), held_s=3600, policy=POLICY) == Tier.STATIC


def test_below_the_margin_the_tier_is_left_once_it_held_for_the_dwell_time() -> None:
    assert select_tier(Tier.CACHE, rate(2.9), held_s=29.9, policy=POLICY) == Tier.CACHE
    assert select_tier(Tier.CACHE, rate(2.9), held_s=30, policy=POLICY) == Tier.NORMAL


def test_leaving_lands_on_the_highest_tier_the_rate_still_holds() -> None:
    # 14 % is under tier 3's band (28 %) but within tier 2's (13 %).
    assert select_tier(Tier.STATIC, rate(14), held_s=60, policy=POLICY) == Tier.DOWNGRADE
    # 12 % is under tier 2's band but within tier 1's.
    assert select_tier(Tier.STATIC, rate(12), held_s=60, policy=POLICY) == Tier.CACHE
    assert select_tier(Tier.STATIC, rate(1), held_s=60, policy=POLICY) == Tier.NORMAL


def test_a_rate_hovering_at_a_threshold_does_not_flap() -> None:
    tier, held = Tier.NORMAL, 0.0
    changes = 0
    for percent in [5.1, 4.9, 5.0, 3.5, 5.2, 4.0, 3.1, 5.0] * 10:
        chosen = select_tier(tier, rate(percent), held_s=held, policy=POLICY)
        if chosen != tier:
            changes += 1
            tier, held = chosen, 0.0
        held += 1.0
    assert changes == 1 and tier == Tier.CACHE


def test_too_few_requests_stay_normal_and_let_a_tier_go_after_the_dwell() -> None:
    few = Window(requests=19, failures=19)
    assert select_tier(Tier.NORMAL, few, held_s=0, policy=POLICY) == Tier.NORMAL
    assert select_tier(Tier.STATIC, few, held_s=5, policy=POLICY) == Tier.STATIC
    assert select_tier(Tier.STATIC, few, held_s=30, policy=POLICY) == Tier.NORMAL
    assert select_tier(Tier.NORMAL, Window(20, 20), held_s=0, policy=POLICY) == Tier.STATIC


def test_an_empty_window_has_no_rate() -> None:
    assert Window(0, 0).rate == 0.0
    assert Window(8, 2).rate == 0.25
