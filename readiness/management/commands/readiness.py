from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson
from django.core.management.base import BaseCommand, CommandError, CommandParser

from readiness.report import line, verdict
from readiness.runner import Finding, run_checklist


class Command(BaseCommand):
    help = (
        "Run the readiness checklist and print it; exit 1 when a check fails. The request-path "
        "checks (auth, /metrics, smoke load, latency) go to a private gateway started for the "
        "run, or to --url."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="the run as JSON on stdout")
        parser.add_argument(
            "--url",
            default="",
            help="a running gateway to send the request-path checks to "
            "(default: a private one on a loopback port)",
        )

        # Set by `serve --production`, so the stored run says what started it.
        parser.add_argument("--trigger", default="command", help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        as_json = options["json"]

        def progress(finding: Finding) -> None:
            if not as_json:  # live, so a slow smoke load shows what it waits for
                self.stdout.write(line(finding))
                self.stdout.flush()

        report = run_checklist(
            trigger=options["trigger"], gateway_url=options["url"], progress=progress
        )
        if as_json:
            sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
            sys.stdout.write("\n")
        else:
            self.stdout.write("\n" + verdict(report))
        if not report.passed:
            raise CommandError("the readiness checklist failed", returncode=1)
