"""Request logs: appended to a Redis list when a request ends (by the RELEASE script in
gateway.admission, with the request's metrics),
bulk-inserted by a Celery task. Entries leave Redis only after the insert committed, so a
database outage delays logs instead of losing them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from clawdbot_site import redis_keys

BUFFER = redis_keys.REQUEST_LOG
FLUSH_LOCK = redis_keys.REQUEST_LOG_FLUSH_LOCK
FIELDS = (
    "request_id",
    "endpoint",
    "key_prefix",
    "model",
    "served_model",
    "node",
    "status",
    "stream",
    "latency_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "attempts",
    "error_code",
    "error_message",
    "prompt_truncated",
)


def to_row_kwargs(raw: bytes) -> dict[str, Any] | None:
    """Model kwargs for one buffered entry; None for an entry that cannot be read."""
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(entry, dict) or "request_id" not in entry or "ts" not in entry:
        return None
    row = {f: entry.get(f) for f in FIELDS}
    for text_field in ("key_prefix", "model", "served_model", "node", "error_code"):
        row[text_field] = (row[text_field] or "")[:128]
    row["error_message"] = (row["error_message"] or "")[:500]
    row["stream"] = bool(row["stream"])
    row["prompt_truncated"] = bool(row["prompt_truncated"])
    row["attempts"] = row["attempts"] or 0  # nodes tried: none for a refused request
    row["created_at"] = datetime.fromtimestamp(float(entry["ts"]), tz=UTC)
    return row
