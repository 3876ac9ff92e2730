"""The request log: one entry per /v1 request, appended to a Redis list by the RELEASE script
when the request ends (gateway.admission, with its metrics), bulk-inserted into the database
by a Celery task (gateway.tasks). Entries leave Redis only after the insert committed, so a
database outage delays logs instead of losing them.

`LogEntry` is the entry's one definition: what the gateway writes, what the flush reads, and
(a test checks) the columns of `RequestLog`."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import orjson

from clawdbot_site import redis_keys

BUFFER = redis_keys.REQUEST_LOG
FLUSH_LOCK = redis_keys.REQUEST_LOG_FLUSH_LOCK
REJECTED = redis_keys.REQUEST_LOG_REJECTED
REJECTED_KEPT = 10_000
TEXT_LIMIT = 128  # the short text columns' max_length
SUBJECT_LIMIT = 255
MESSAGE_LIMIT = 500


@dataclass(frozen=True, slots=True)
class LogEntry:
    request_id: str
    ts: float  # unix seconds: the row's created_at
    endpoint: str
    key_prefix: str  # empty for a single sign-on token
    subject: str  # a single sign-on token's subject; empty for a key
    model: str  # as the client asked (any string: clipped when stored)
    served_model: str
    node: str
    status: int
    stream: bool
    latency_ms: float
    ttft_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    attempts: int  # nodes tried: 0 when refused before any node
    error_code: str
    error_message: str
    prompt_truncated: bool
    degraded: str  # what a degradation tier did: RequestLog.Degraded, or empty
    affinity: str = ""  # how conversation affinity placed it: RequestLog.Affinity, or empty
    route: str = ""  # why this node (the X-Clawdbot-Route header)

    def to_json(self) -> bytes:
        return orjson.dumps(self)


FIELDS = tuple(f.name for f in fields(LogEntry))


def _text(value: object) -> str:
    """A text column's value. Clients choose some of these strings (a model name, a path):
    PostgreSQL refuses NUL in text, and one such row would fail the whole batch."""
    if not isinstance(value, str):
        return "" if value is None else str(value)
    return value.replace("\x00", "") if "\x00" in value else value


_TEXT = ("key_prefix", "model", "served_model", "node", "error_code")


def to_row_kwargs(raw: bytes) -> dict[str, Any] | None:
    """Model kwargs for one buffered entry; None for an entry that cannot be read. Tolerant:
    an entry written by another version of the gateway may lack fields."""
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(entry, dict) or "request_id" not in entry or "ts" not in entry:
        return None
    row = {f: entry.get(f) for f in FIELDS if f != "ts"}
    for text_field in _TEXT:
        row[text_field] = _text(row[text_field])[:TEXT_LIMIT]
    row["subject"] = _text(row["subject"])[:SUBJECT_LIMIT]
    row["request_id"] = _text(row["request_id"])
    row["endpoint"] = _text(row["endpoint"])
    row["error_message"] = _text(row["error_message"])[:MESSAGE_LIMIT]
    row["stream"] = bool(row["stream"])
    row["prompt_truncated"] = bool(row["prompt_truncated"])
    row["degraded"] = _text(row["degraded"])[:12]
    row["affinity"] = _text(row["affinity"])[:12]
    row["route"] = _text(row["route"])[:200]
    row["attempts"] = row["attempts"] or 0
    try:
        row["created_at"] = datetime.fromtimestamp(float(entry["ts"]), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return row
