"""Time the console's analytics pages against this database, as a staff user would load
them: `clawdbot measure_pages [--repeat 7]`. With `clawdbot generate_requestlog` first, this
gives the figures in docs/operators-guide.md ("The console's analytics pages").

Each page is rendered in-process (view, queries and template; no HTTP, session or login
lookups), once to warm up and then `--repeat` times; the best run is the page's cost on an
idle machine, the median what a busy one gave."""

from __future__ import annotations

import statistics
import time
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandParser
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import resolve

from gateway.models import RequestLog

PAGES = (
    "/latency/?window=15m",
    "/latency/?window=1h",
    "/latency/?window=24h",
    "/latency/?window=7d",
    "/latency/?window=7d&model=qwen3-32b&node=gpu-a100-1",
    "/usage/?window=1h",
    "/usage/?window=24h",
    "/usage/?window=7d",
    "/requests/",
    "/requests/?q=5xx",
    "/requests/?model=llama3.3-70b&node=gpu-h100-1",
    "/requests/?status=503&since=24h",
)


class Command(BaseCommand):
    help = "Time the console's analytics pages (server time per page, queries, SQL time)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--repeat", type=int, default=7)
        parser.add_argument("pages", nargs="*", help="paths (default: every analytics page)")

    def handle(self, *args: Any, **options: Any) -> None:
        factory = RequestFactory()
        staff = User(username="measure", is_staff=True, is_superuser=True)
        rows = RequestLog.objects.count()
        self.stdout.write(f"request log: {rows:,} rows; {connection.vendor}")
        self.stdout.write(f"{'page':52} {'queries':>7} {'best':>8} {'median':>8} {'sql':>8}")
        for path in options["pages"] or PAGES:
            view = resolve(path.split("?")[0]).func
            walls: list[float] = []
            sql: list[float] = []
            queries = 0
            for attempt in range(options["repeat"] + 1):
                request = factory.get(path)
                request.user = staff
                with CaptureQueriesContext(connection) as captured:
                    started = time.perf_counter()
                    response = view(request)
                    wall = (time.perf_counter() - started) * 1000
                assert response.status_code == 200, (path, response.status_code)
                if attempt:  # the first run warms caches and compiles templates
                    walls.append(wall)
                    sql.append(sum(float(q["time"]) for q in captured.captured_queries) * 1000)
                    queries = len(captured.captured_queries)
            self.stdout.write(
                f"{path:52} {queries:>7} {min(walls):>6.0f}ms {statistics.median(walls):>6.0f}ms"
                f" {min(sql):>6.0f}ms"
            )
