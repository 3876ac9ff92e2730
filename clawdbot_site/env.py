"""Typed parsers for settings read from the environment.

A bad value must stop start-up with a message that names the variable, so a typo in a
deployment fails loudly instead of silently falling back to a default.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping


class ConfigError(Exception):
    """A setting from the environment is missing or malformed."""


def env_str(name: str, default: str, environ: Mapping[str, str] = os.environ) -> str:
    value = environ.get(name, "")
    return value if value != "" else default


def env_bool(name: str, default: bool, environ: Mapping[str, str] = os.environ) -> bool:
    raw = environ.get(name, "")
    if raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false (1/0, yes/no, on/off), got {raw!r}")


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    environ: Mapping[str, str] = os.environ,
) -> int:
    raw = environ.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(
    name: str,
    default: float,
    *,
    minimum: float | None = None,
    environ: Mapping[str, str] = os.environ,
) -> float:
    raw = environ.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_choice(
    name: str, default: str, choices: tuple[str, ...], environ: Mapping[str, str] = os.environ
) -> str:
    value = env_str(name, default, environ)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def env_scores(
    name: str, defaults: Mapping[str, float], environ: Mapping[str, str] = os.environ
) -> dict[str, float]:
    """`KEY=number,KEY=number` merged over `defaults` (e.g. GPU base scores)."""
    merged = dict(defaults)
    raw = environ.get(name, "").strip()
    if not raw:
        return merged
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        try:
            score = float(value)
        except ValueError:
            score = -1.0
        if not sep or not key.strip() or score <= 0:
            raise ConfigError(
                f"{name} must look like 'H200=430,L40S=180' (positive numbers), got {raw!r}"
            )
        merged[key.strip()] = score
    return merged


def env_list(
    name: str, default: tuple[str, ...] = (), environ: Mapping[str, str] = os.environ
) -> tuple[str, ...]:
    """Comma-separated values, stripped; empty items are dropped."""
    raw = environ.get(name, "")
    if raw.strip() == "":
        return default
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def env_names_map(name: str, environ: Mapping[str, str] = os.environ) -> dict[str, tuple[str, ...]]:
    """A JSON object of names to lists of names, e.g. `{"ml-team": ["qwen3-32b"]}`."""
    raw = environ.get(name, "").strip()
    if not raw:
        return {}
    shape = f'{name} must be a JSON object of lists of names, e.g. {{"ml-team": ["qwen3-32b"]}}'
    try:
        value = json.loads(raw)
    except ValueError:
        raise ConfigError(f"{shape}; it is not JSON: {raw!r}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{shape}, got {raw!r}")
    mapped = {}
    for key, names in value.items():
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"{shape}; the entry {key!r} is not a list of names")
        mapped[key] = tuple(names)
    return mapped
