"""Identifiers: the shape clients see, and no repeats across many draws."""

from __future__ import annotations

import re

from gateway.ids import new_id


def test_ids_are_24_hex_digits_and_do_not_repeat() -> None:
    drawn = [new_id() for _ in range(20_000)]
    assert all(re.fullmatch(r"[0-9a-f]{24}", i) for i in drawn)
    assert len(set(drawn)) == len(drawn)
