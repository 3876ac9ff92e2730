"""Request-log rows for the analytics tests, written as the flush writes them."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from gateway.models import RequestLog

_ids = itertools.count(1)


def log_row(at: datetime, **fields: Any) -> RequestLog:
    values: dict[str, Any] = {
        "request_id": f"req-{next(_ids):024x}",
        "created_at": at,
        "endpoint": "chat/completions",
        "key_prefix": "abcd1234",
        "model": "qwen3-32b",
        "served_model": "qwen3-32b",
        "node": "gpu1",
        "status": 200,
        "stream": True,
        "latency_ms": 800.0,
        "ttft_ms": 100.0,
        "prompt_tokens": 10,
        "completion_tokens": 70,
        "attempts": 1,
    }
    values.update(fields)
    return RequestLog(**values)


def add_rows(*rows: RequestLog) -> list[RequestLog]:
    return RequestLog.objects.bulk_create(rows)
