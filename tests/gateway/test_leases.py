"""The leases a process holds: one record per lease, renewed while it is a slot."""

from __future__ import annotations

from clawdbot_site import redis_keys
from gateway.leases import HeldLeases, Lease


def test_a_lease_names_the_sorted_set_it_lives_in() -> None:
    assert Lease("a", "gpu1").key == redis_keys.slots("gpu1")
    assert Lease("a", "gpu1", queued=True).key == redis_keys.queue("gpu1")


def test_a_granted_place_replaces_itself_and_becomes_renewable() -> None:
    held = HeldLeases()
    place = Lease("a", "gpu1", queued=True)
    held.hold(place)
    assert held.slots() == [] and len(held) == 1
    slot = place.granted("gpu2")
    held.hold(slot)
    assert held.slots() == [Lease("a", "gpu2")] and len(held) == 1
    assert slot in held and place not in held


def test_a_dropped_lease_is_no_longer_renewed() -> None:
    held = HeldLeases()
    held.hold(Lease("a", "gpu1"))
    held.drop(Lease("a", "gpu1"))
    assert held.slots() == [] and len(held) == 0
