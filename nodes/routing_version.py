"""The routing-config version in Redis: the control plane bumps it after every committed
change to nodes, profiles, deployments or keys; gateway processes rebuild their snapshot
when it moves (gateway/runtime.py reads it)."""

from __future__ import annotations

import logging

import redis
from django.db import transaction

from clawdbot_site import redis_keys
from clawdbot_site.redis_client import sync_client

log = logging.getLogger(__name__)


def bump_now() -> None:
    try:
        sync_client().incr(redis_keys.ROUTING_VERSION)
    except redis.RedisError as exc:
        # The config is committed; gateways pick it up at their next periodic full rebuild.
        log.warning("could not bump the routing version: %s", exc)


def bump_after_commit() -> None:
    transaction.on_commit(bump_now)
