from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from clawdbot_site import supervisor


def _workers(text: str) -> int:
    try:
        return supervisor.worker_count(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class Command(BaseCommand):
    help = (
        "Serve the gateway, dashboard and admin with daphne (ASGI); with --workers N, N daphne "
        "processes serve one port under a supervisor that restarts any that dies."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--workers",
            type=_workers,
            default=1,
            help="gateway processes behind the port (default 1; 0 or 'auto': one per CPU)",
        )
        parser.add_argument(
            "--production",
            action="store_true",
            help="run with CLAWDBOT_MODE=production (requires CLAWDBOT_SECRET_KEY)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        env = dict(os.environ)
        if options["production"]:
            env["CLAWDBOT_MODE"] = "production"
        host, port, workers = options["host"], options["port"], options["workers"]
        daphne = [sys.executable, "-m", "daphne", "--proxy-headers"]
        app = "clawdbot_site.asgi:application"
        if workers == 1:
            self.stdout.write(f"serving on http://{host}:{port}/")
            self.stdout.flush()
            # exec: daphne becomes this process, so signals from honcho or systemd reach it.
            argv = [*daphne, "--bind", host, "--port", str(port), app]
            os.execve(sys.executable, argv, env)
        try:
            socks = supervisor.listen(host, port, workers)
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port}: {exc}") from None

        def command(fd: int) -> Sequence[str]:
            return [*daphne, "--fd", str(fd), app]

        self.stdout.write(f"serving on http://{host}:{port}/ with {workers} processes")
        self.stdout.flush()
        code = supervisor.Supervisor(command, socks, env).run()
        for sock in socks:
            sock.close()
        if code:
            raise CommandError("gateway processes could not start; see their output above")
