"""Console events are best effort: a channel layer that is down never breaks the caller."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from channels.layers import channel_layers

from nodes import live_events
from nodes.live_sender import QUEUE_LIMIT, Sender


def test_a_channel_layer_that_is_down_costs_a_log_line_not_the_caller(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    live_events.SENDER.flush()  # events of earlier tests go out on the real layer first
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:9/0"]},
        }
    }
    channel_layers.backends.clear()
    try:
        live_events.send(live_events.telemetry("gpu1", {"nvml": False, "error": "no NVML"}))
        live_events.SENDER.flush()
    finally:
        channel_layers.backends.clear()
    assert "console event node.telemetry for gpu1 not sent" in caplog.text


def test_a_full_queue_drops_events_instead_of_holding_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sender = Sender("nobody")
    loop, _ = sender._started()
    blocked = threading.Event()
    # Hold the sender's loop so nothing drains while the queue fills up.
    loop.call_soon_threadsafe(blocked.wait)
    for i in range(QUEUE_LIMIT + 1):
        sender.put({"type": "node.probe", "node": f"n{i}"})
    blocked.set()
    sender.flush()
    assert "console events back up; node.probe for n1000 dropped" in caplog.text
