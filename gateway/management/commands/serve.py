from __future__ import annotations

import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Serve the gateway, dashboard and admin with daphne (ASGI)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--production",
            action="store_true",
            help="run with CLAWDBOT_MODE=production (requires CLAWDBOT_SECRET_KEY)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        env = dict(os.environ)
        if options["production"]:
            env["CLAWDBOT_MODE"] = "production"
        argv = [
            sys.executable,
            "-m",
            "daphne",
            "--bind",
            options["host"],
            "--port",
            str(options["port"]),
            "--proxy-headers",
            "clawdbot_site.asgi:application",
        ]
        self.stdout.write(f"serving on http://{options['host']}:{options['port']}/")
        self.stdout.flush()
        # exec: daphne becomes this process, so signals from honcho or systemd reach it directly.
        os.execve(sys.executable, argv, env)
