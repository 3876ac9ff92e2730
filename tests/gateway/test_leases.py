"""The leases a process holds: one record per lease, renewed while it is a slot."""

from __future__ import annotations

from clawdbot_site import redis_keys
from gateway.exchange import Exchange
from gateway.leases import HeldLeases, Lease


def test_a_lease_names_the_sorted_set_it_lives_in() -> None:
    assert Lease("a", "gpu1").key == redis_keys.slots("gpu1")
    assert Lease("a", "gpu1", queued=True).key == redis_keys.queue("gpu1")


def test_a_granted_place_replaces_itself_and_becomes_renewable() -> None:
    held, ex = HeldLeases(), Exchange("chat")
    place = Lease("a", "gpu1", queued=True)
    held.hold(ex, place)
    assert held.slots() == [] and len(held) == 1 and ex.lease == place
    slot = place.granted("gpu2")
    held.hold(ex, slot)
    assert held.slots() == [Lease("a", "gpu2")] and len(held) == 1 and ex.lease == slot
    assert slot in held and place not in held


def test_a_dropped_lease_is_handed_back_once_and_no_longer_renewed() -> None:
    held, ex = HeldLeases(), Exchange("chat")
    held.hold(ex, Lease("a", "gpu1"))
    assert held.drop(ex) == Lease("a", "gpu1")
    assert held.slots() == [] and len(held) == 0 and ex.lease is None
    assert held.drop(ex) is None  # released already: nothing to release twice
