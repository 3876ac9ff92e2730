"""The request-log entry is defined once: what the gateway writes is what the flush reads and
what the table holds."""

from __future__ import annotations

from dataclasses import replace

import orjson

from gateway.models import RequestLog
from gateway.request_log import FIELDS, LogEntry, to_row_kwargs

ENTRY = LogEntry(
    request_id="req-1",
    ts=1_700_000_000.5,
    endpoint="chat",
    key_prefix="abc",
    subject="",
    model="qwen3-32b",
    served_model="qwen3-32b",
    node="gpu1",
    status=200,
    stream=True,
    latency_ms=12.5,
    ttft_ms=3.25,
    prompt_tokens=10,
    completion_tokens=None,
    attempts=1,
    error_code="",
    error_message="",
    prompt_truncated=False,
    degraded="cache",
)


def test_the_entry_has_exactly_the_table_s_columns() -> None:
    columns = {f.name for f in RequestLog._meta.concrete_fields} - {"id", "created_at"}
    assert set(FIELDS) - {"ts"} == columns


def test_an_entry_round_trips_into_a_valid_row() -> None:
    row = to_row_kwargs(ENTRY.to_json())
    assert row is not None
    log = RequestLog(**row)
    log.clean_fields()  # every value fits its column
    assert log.created_at.timestamp() == ENTRY.ts
    assert (log.stream, log.ttft_ms, log.completion_tokens) == (True, 3.25, None)


def test_overlong_client_strings_are_clipped_and_unreadable_entries_skipped() -> None:
    row = to_row_kwargs(replace(ENTRY, model="m" * 1000, error_message="e" * 900).to_json())
    assert row is not None and len(row["model"]) == 128 and len(row["error_message"]) == 500
    assert to_row_kwargs(b"not json") is None
    assert to_row_kwargs(orjson.dumps({"request_id": "x"})) is None  # no timestamp
