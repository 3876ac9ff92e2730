from __future__ import annotations

import sys

from django.core.management.base import BaseCommand

from simulator import cli


class Command(BaseCommand):
    help = (
        "Run a SIMULATED GPU inference node (Ollama or vLLM API) for demos, tests and "
        "benchmarks. All flags: clawdbot simulate-node --help."
    )

    def run_from_argv(self, argv: list[str]) -> None:
        # The simulator owns its flags (it also runs standalone as `python -m simulator`).
        parser = cli.build_arg_parser()
        parser.prog = "clawdbot simulate-node"
        sys.exit(cli.main(argv[2:], parser=parser))
