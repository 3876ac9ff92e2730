from __future__ import annotations

import argparse
import os
import subprocess
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


# EX_CONFIG: systemd's RestartPreventExitStatus= keeps a refused start from looping (each
# attempt would run the checklist's smoke load again against a cluster already in trouble).
REFUSED_NOT_READY = 78
CONFIG_ERROR = 2  # clawdbot_site.cli's exit status for a bad environment variable


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
            help="run with CLAWDBOT_MODE=production (requires CLAWDBOT_SECRET_KEY); in "
            "production the readiness checklist must pass before the port opens",
        )
        parser.add_argument(
            "--skip-readiness",
            action="store_true",
            help="production only, for incidents: start although the checklist would fail "
            "(a warning is logged); also CLAWDBOT_SKIP_READINESS=1",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        env = dict(os.environ)
        if options["production"]:
            env["CLAWDBOT_MODE"] = "production"
        if env.get("CLAWDBOT_MODE") == "production":
            skip = options["skip_readiness"] or env.get("CLAWDBOT_SKIP_READINESS", "") in (
                "1",
                "true",
                "yes",
            )
            self._readiness_gate(env, skip=skip)
        host, port, workers = options["host"], options["port"], options["workers"]
        # Django's own --verbosity, passed on: 0 turns daphne's access log off.
        verbosity = str(min(int(options["verbosity"]), 2))
        daphne = [sys.executable, "-m", "daphne", "--proxy-headers", "-v", verbosity]
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

    def _readiness_gate(self, env: dict[str, str], *, skip: bool) -> None:
        """Production refuses to open its port until the readiness checklist passes. The
        checklist runs in a process of its own with the production environment (this one
        may have been started without it: `serve --production`)."""
        if skip:
            self.stderr.write(
                "WARNING: production mode started without the readiness checklist "
                "(--skip-readiness or CLAWDBOT_SKIP_READINESS); remove it once the incident "
                "is over."
            )
            return
        self.stdout.write("production mode: running the readiness checklist first")
        self.stdout.flush()
        code = subprocess.call(
            [
                sys.executable,
                "-m",
                "clawdbot_site.cli",
                "readiness",
                "--trigger",
                "serve --production",
            ],
            env=env,
        )
        if code == CONFIG_ERROR:
            raise CommandError(
                "production mode refuses to start: the configuration is invalid (above).",
                returncode=REFUSED_NOT_READY,
            )
        if code != 0:
            raise CommandError(
                "production mode refuses to start: the readiness checklist failed (above). "
                "Fix what it names, or during an incident start with --skip-readiness.",
                returncode=REFUSED_NOT_READY,
            )
