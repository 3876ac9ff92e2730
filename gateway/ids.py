"""Identifiers for requests, completions, tool calls and slot leases.

They must be unique, not secret: 96 bits from the interpreter's Mersenne Twister (seeded from
the OS at start-up and reseeded in a forked child) are as unlikely to collide as 12 bytes of
`os.urandom`, without a getrandom system call for each (three per request on the hot path)."""

from __future__ import annotations

import random


def new_id() -> str:
    """24 hex digits."""
    return f"{random.getrandbits(96):024x}"
