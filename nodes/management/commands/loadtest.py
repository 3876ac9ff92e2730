from __future__ import annotations

import sys

from django.core.management.base import BaseCommand

from loadgen import cli


class Command(BaseCommand):
    help = (
        "Load the gateway's /v1 API with concurrent clients (a count or a duration, streamed "
        "or not), summarize throughput, errors by status and latency, and exit 1 when a "
        "threshold is broken. All flags: clawdbot loadtest --help."
    )

    def run_from_argv(self, argv: list[str]) -> None:
        # The load generator owns its flags (it also runs standalone as `python -m loadgen`).
        parser = cli.build_arg_parser()
        parser.prog = "clawdbot loadtest"
        sys.exit(cli.main(argv[2:], parser=parser))
