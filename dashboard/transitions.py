"""A node's state transitions, read off its probe history: each probe records the state it
left the node in, so a transition is a probe whose state differs from the one before it.
Pure: the selector feeds it the newest probes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise


@dataclass(frozen=True)
class Transition:
    at: datetime
    before: str
    after: str


def transitions(
    probes: Sequence[tuple[datetime, str]], *, current: str, since: datetime | None
) -> list[Transition]:
    """Newest first. `probes` are (at, state after), newest first. A state set outside the
    probes (a warm-up promoting the node to READY) shows as the current state `since` its
    change when the newest probe left another state."""
    found = [
        Transition(at=newer[0], before=older[1], after=newer[1])
        for newer, older in pairwise(probes)
        if newer[1] != older[1]
    ]
    if probes and since is not None and probes[0][1] != current and since >= probes[0][0]:
        found.insert(0, Transition(at=since, before=probes[0][1], after=current))
    return found
