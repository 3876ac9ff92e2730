"""Reading back what routing learned of conversations and prefix caches (nodes/
conversations_learned.py), and that its priors are still the admission script's."""

from __future__ import annotations

import pytest

from gateway.admission import ADMIT
from nodes import conversations_learned as learned


def test_without_samples_the_priors_hold() -> None:
    nothing = learned.conversations({})
    # First turns are taken for single-turn traffic until one is seen to continue.
    assert nothing == learned.Conversations(0.0, 0.8, 10.0)


def test_what_users_did_outweighs_the_priors() -> None:
    seen = learned.conversations(
        {b"c1": b"90", b"e1": b"10", b"c2": b"30", b"e2": b"10", b"gap": b"4000"}
    )
    assert seen.first_continue == pytest.approx(90 / 101)
    assert seen.later_continue == pytest.approx((30 + 3.2) / 44)
    assert seen.pause_s == 4.0
    # Never quite certain, and unreadable values count as unseen.
    assert learned.conversations({b"c2": b"1e9"}).later_continue == 0.98
    assert learned.conversations({b"c1": b"x", b"gap": b"nan"}) == learned.conversations({})


def test_a_prefix_cache_fades_from_its_last_intake() -> None:
    fields = {b"rate": b"20", b"t": b"1000000", b"cap": b"250000", b"occ": b"5.5"}
    now = learned.prefix_cache(fields, 1_000_000)
    later = learned.prefix_cache(fields, 1_000_000 + learned.CACHE_TAU_MS)
    assert now == learned.PrefixCache(250_000, 20_000, 5.5)
    assert later is not None and later.intake_tps == pytest.approx(20_000 / 2.718, rel=0.01)
    assert "holds about 250,000 tokens" in now.describe()
    unknown = learned.prefix_cache({b"rate": b"1", b"t": b"0"}, 0)
    assert unknown is not None and "not learned yet" in unknown.describe()
    assert learned.prefix_cache({}, 0) is None


def test_the_priors_are_the_admission_scripts() -> None:
    (first, first_weight), (later, later_weight) = learned.CONTINUE_PRIORS
    assert (
        f"CONTINUE_PRIOR, PRIOR_TURNS, GAP_PRIOR_MS = {{{first:g}, {later:g}}}, "
        f"{{{first_weight:g}, {later_weight:g}}}, {learned.GAP_PRIOR_MS}"
    ) in ADMIT
    assert f"CACHE_TAU_MS, OCCUPANCY_TAU_MS = {learned.CACHE_TAU_MS}," in ADMIT
    assert f"q = math.min(q, {learned.MAX_CONTINUE:g})" in ADMIT
