"""Ollama `keep_alive` values: "5m"-style durations, plain seconds, negative = forever."""

from __future__ import annotations

import functools
import re

_DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_keep_alive(value: str) -> float | None:
    """Seconds to keep a model loaded; None means forever. Raises ValueError when malformed."""
    text = value.strip()
    match = _DURATION.match(text)
    if not match:
        raise ValueError(
            f"{value!r} is not a keep-alive duration: use seconds (300), a duration "
            "(30s, 5m, 1h), 0 to unload after each request or -1 to keep loaded"
        )
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return None if seconds < 0 else seconds


@functools.lru_cache(maxsize=256)  # on every Ollama request; profiles have few values
def keep_alive_wire_value(value: str) -> str | int:
    """What to send to Ollama: plain numbers as integers, durations as strings."""
    text = value.strip()
    try:
        return int(text)
    except ValueError:
        return text
