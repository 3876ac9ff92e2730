"""Each node's server-reported load in Redis, for routing (the ADMIT script reads the hash),
the admin, /api and /metrics.

    clawdbot:srvload:<node>   hash: running, waiting, kv (0..1, absent when the server does
                              not export it), at (unix ms of the scrape that read them),
                              stale (1 once a later scrape failed); expires 15 s after `at`

A scrape that fails (a /metrics slow under load, a refused connection) leaves the last values
in place, marked stale, until they expire: a node is never shown idle for a missed scrape,
nor busy forever after its server went away."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, cast

from clawdbot_site import redis_keys
from clawdbot_site.redis_client import sync_client
from nodes.server_load import ServerLoad

log = logging.getLogger(__name__)

LOAD_TTL_S = 15.0

# HSET on a key that has just expired would make it again, without a TTL: forever.
_MARK_STALE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'stale', '1')
  return 1
end
return 0
"""


def publish(node_name: str, load: ServerLoad, at_ms: int) -> None:
    key = redis_keys.server_load(node_name)
    fields: dict[str, int | float] = {
        "running": load.running,
        "waiting": load.waiting,
        "at": at_ms,
        "stale": 0,
    }
    if load.kv is not None:
        fields["kv"] = round(load.kv, 4)
    pipe = sync_client().pipeline(transaction=True)
    pipe.delete(key)  # a kv the server stopped exporting must not linger
    pipe.hset(key, mapping=cast(Any, fields))  # redis-py's Mapping is invariant
    pipe.pexpire(key, int(LOAD_TTL_S * 1000))
    pipe.execute()


def mark_stale(node_name: str) -> bool:
    """Flag the last values as stale; False when there were none left."""
    return bool(sync_client().eval(_MARK_STALE, 1, redis_keys.server_load(node_name)))


def forget(node_name: str) -> None:
    """The server does not export load gauges (any more): nothing to show or route on."""
    sync_client().delete(redis_keys.server_load(node_name))


def latest(node_names: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    """Each node's last load (None: none, or expired), one pipelined round trip."""
    names = list(node_names)
    if not names:
        return {}
    pipe = sync_client().pipeline(transaction=False)
    for name in names:
        pipe.hgetall(redis_keys.server_load(name))
    raw = pipe.execute()
    return {name: decode(name, fields) for name, fields in zip(names, raw, strict=True)}


def decode(node_name: str, fields: dict[bytes, bytes] | None) -> dict[str, Any] | None:
    """The hash as plain values: running, waiting (int), kv (float or None), at (int ms),
    stale (bool). None when empty or unreadable."""
    if not fields:
        return None
    try:
        values = {k.decode(): v.decode() for k, v in fields.items()}
        return {
            "running": int(values["running"]),
            "waiting": int(values["waiting"]),
            "kv": float(values["kv"]) if "kv" in values else None,
            "at": int(values["at"]),
            "stale": values.get("stale") == "1",
        }
    except (KeyError, ValueError, UnicodeDecodeError):
        log.warning("server load of %s in Redis cannot be read: %r", node_name, fields)
        return None
