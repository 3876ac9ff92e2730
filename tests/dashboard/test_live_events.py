"""Console events are best effort: a channel layer that is down never breaks the caller."""

from __future__ import annotations

from typing import Any

import pytest
from channels.layers import channel_layers

from nodes import live_events


def test_a_channel_layer_that_is_down_costs_a_log_line_not_the_caller(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:9/0"]},
        }
    }
    channel_layers.backends.clear()
    try:
        live_events.send(live_events.telemetry("gpu1", {"nvml": False, "error": "no NVML"}))
    finally:
        channel_layers.backends.clear()
    assert "console event node.telemetry for gpu1 not sent" in caplog.text
