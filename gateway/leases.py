"""A request's hold on a node, and the leases this process holds.

A lease is a member of one of the node's sorted sets in Redis, scored by its expiry: a slot
(`redis_keys.slots`) or a place in the node's queue (`redis_keys.queue`). The admission
scripts grant and free them; this process renews its slots until it releases them, so a
killed process leaks nothing (its leases lapse within `admission.LEASE_TTL_MS`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from clawdbot_site import redis_keys

if TYPE_CHECKING:
    from gateway.exchange import Exchange


@dataclass(frozen=True, slots=True)
class Lease:
    id: str
    node: str
    queued: bool = False  # a place in the node's queue, not yet a slot

    @property
    def key(self) -> str:
        """The sorted set it is a member of."""
        return redis_keys.queue(self.node) if self.queued else redis_keys.slots(self.node)

    def granted(self, node: str) -> Lease:
        """The same lease once its queued request got a slot (on `node`, maybe another)."""
        return Lease(self.id, node, queued=False)


class HeldLeases:
    """The leases held by this process's requests, by id: the one place a request's lease is
    taken up and let go (the Redis side is admission's ADMIT and RELEASE)."""

    def __init__(self) -> None:
        self._held: dict[str, Lease] = {}

    def hold(self, ex: Exchange, lease: Lease) -> None:
        """`ex` holds `lease` now (a granted place replaces itself)."""
        ex.lease = lease
        self._held[lease.id] = lease

    def drop(self, ex: Exchange) -> Lease | None:
        """Take `ex`'s lease back, to be released in Redis by the caller; None if it holds
        none (released already, or never admitted)."""
        lease, ex.lease = ex.lease, None
        if lease is not None:
            self._held.pop(lease.id, None)
        return lease

    def slots(self) -> list[Lease]:
        """What the renewal extends. Places in queues are left out: each poll of their
        request refreshes them (see admission.QUEUE_TTL_MS)."""
        return [lease for lease in self._held.values() if not lease.queued]

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, lease: Lease) -> bool:
        return self._held.get(lease.id) == lease
