"""Fill the request log with generated rows, to measure the console's pages at scale:
`clawdbot generate_requestlog --rows 5000000 --days 7`, then the rollups are refreshed.

PostgreSQL only: one INSERT … SELECT over generate_series per million rows, which writes
5 million rows in about a minute, where the ORM would take an hour. Never on a production
database: the rows look real (`gen…` request ids) and land in the pages and the metrics."""

from __future__ import annotations

import time
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction

from dashboard import rollups
from gateway.models import RequestLog

MODELS = ("qwen3-32b", "llama3.3-70b", "qwen2.5-coder-7b")
NODES = ("gpu-a100-1", "gpu-a100-2", "gpu-h100-1", "gpu-l40s-1")
KEYS = 20
BATCH = 1_000_000

# Each column's value for row number g (1…total) with u1..u3 uniform in (0, 1] and z a
# standard normal draw (Box-Muller). Latency is log-normal around ~800 ms, slower for the
# 70B model, 1 ms for refusals; about 5 % of requests fail with a mix of statuses.
EXPRESSIONS = {
    "request_id": "'gen' || %(tag)s || '-' || g",
    # In time order, as the flush appends them: a window's rows sit together on disk, as
    # they do in a real log (rows scattered at random would cost a page read each).
    "created_at": "now() - (%(seconds)s * (1 - (g - u1) / %(total)s)) * interval '1 second'",
    "endpoint": "'chat/completions'",
    "key_prefix": "'genkey' || lpad((floor(u2 * %(keys)s))::int::text, 2, '0')",
    "subject": "''",
    "model": "(%(models)s::text[])[1 + (g %% 3)]",
    "served_model": "(%(models)s::text[])[1 + (g %% 3)]",
    "node": "(%(nodes)s::text[])[1 + ((g / 3) %% 4)]",
    "status": "CASE WHEN u3 < 0.95 THEN 200 WHEN u3 < 0.97 THEN 429 WHEN u3 < 0.985 THEN 503 "
    "WHEN u3 < 0.995 THEN 500 ELSE 400 END",
    "stream": "(g %% 2 = 0)",
    "latency_ms": "CASE WHEN u3 >= 0.95 AND u3 < 0.97 THEN 1 + u2 "
    "ELSE exp(ln(CASE WHEN g %% 3 = 1 THEN 1600 ELSE 700 END) + 0.6 * z) END",
    "ttft_ms": "CASE WHEN u3 < 0.95 THEN exp(ln(120) + 0.7 * z) END",
    "prompt_tokens": "CASE WHEN u3 < 0.95 THEN 50 + floor(u2 * 900)::int END",
    "completion_tokens": "CASE WHEN u3 < 0.95 THEN 20 + floor(u1 * 400)::int END",
    "attempts": "CASE WHEN u3 >= 0.95 AND u3 < 0.97 THEN 0 ELSE 1 END",
    "error_code": "CASE WHEN u3 < 0.95 THEN '' WHEN u3 < 0.97 THEN 'rate_limited' "
    "ELSE 'upstream_error' END",
    "error_message": "''",
    "prompt_truncated": "false",
    "degraded": "''",
}


def column_expressions() -> dict[str, str]:
    """Every column of RequestLog with its expression: the ones above, and for columns added
    since, their default (empty text, false, NULL)."""
    columns: dict[str, str] = {}
    for field in RequestLog._meta.concrete_fields:
        column = field.column
        if field.primary_key or column is None:
            continue
        if field.name in EXPRESSIONS:
            columns[column] = EXPRESSIONS[field.name]
        elif field.null:
            columns[column] = "NULL"
        elif field.get_internal_type() == "BooleanField":
            columns[column] = "false"
        elif field.get_internal_type() in ("CharField", "TextField"):
            columns[column] = "''"
        else:
            raise CommandError(f"no generated value for RequestLog.{field.name}")
    return columns


class Command(BaseCommand):
    help = "Generate request-log rows (PostgreSQL only) and refresh the rollups."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rows", type=int, default=5_000_000)
        parser.add_argument("--days", type=float, default=7.0, help="spread over the last N days")
        parser.add_argument("--no-refresh", action="store_true", help="leave the rollups be")

    def handle(self, *args: Any, **options: Any) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("generate_requestlog needs PostgreSQL (DATABASE_URL=postgres://…)")
        columns = column_expressions()
        table = RequestLog._meta.db_table
        # The identifiers and expressions are this module's own; the values go as parameters.
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608
            f"SELECT {', '.join(columns.values())} FROM ("
            "  SELECT g, u1, u2, u3,"
            "    sqrt(-2 * ln(u4)) * cos(2 * pi() * u5) AS z"
            "  FROM (SELECT g, 1 - random() AS u1, 1 - random() AS u2, random() AS u3,"
            "          1 - random() AS u4, random() AS u5"
            "        FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g"
            "        OFFSET 0) AS draws"  # OFFSET 0: keep each row's draws, not one per use
            " OFFSET 0) AS r"
        )
        tag = uuid.uuid4().hex[:8]
        total = options["rows"]
        started = time.monotonic()
        done = 0
        while done < total:
            n = min(BATCH, total - done)
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    sql,
                    {
                        "tag": tag,
                        "seconds": options["days"] * 86400,
                        "keys": KEYS,
                        "models": list(MODELS),
                        "nodes": list(NODES),
                        "total": total,
                        "first": done + 1,
                        "last": done + n,
                    },
                )
            done += n
            self.stderr.write(f"{done} rows ({time.monotonic() - started:.0f} s)")
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {table}")
        self.stdout.write(f"inserted {done} rows in {time.monotonic() - started:.1f} s")
        if not options["no_refresh"]:
            refreshed = rollups.refresh()
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE dashboard_latencyrollup")
                cursor.execute("ANALYZE dashboard_keyusagerollup")
            self.stdout.write(
                f"rollups took in {refreshed.rows} rows in {refreshed.ms / 1000:.1f} s"
            )
