"""`clawdbot requestlog`: what the flush set aside, shown, sent back or dropped."""

from __future__ import annotations

import io

import pytest
import redis
from django.core.management import call_command

from clawdbot_site import redis_keys

pytestmark = pytest.mark.slow  # real Redis


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("requestlog", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_show_requeue_and_drop(redis_client: redis.Redis) -> None:
    redis_client.rpush(redis_keys.REQUEST_LOG_REJECTED, b"first", b"second", b"third")
    out, err = run("rejected", "--limit", "2")
    assert out.splitlines() == ["second", "third"] and "3 entries set aside" in err
    _, err = run("requeue")
    assert "3 entries sent back" in err
    assert redis_client.lrange(redis_keys.REQUEST_LOG, 0, -1) == [b"first", b"second", b"third"]
    assert redis_client.llen(redis_keys.REQUEST_LOG_REJECTED) == 0
    redis_client.rpush(redis_keys.REQUEST_LOG_REJECTED, b"again")
    _, err = run("drop")
    assert "1 entries dropped" in err and redis_client.llen(redis_keys.REQUEST_LOG_REJECTED) == 0
