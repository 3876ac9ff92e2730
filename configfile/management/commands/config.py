from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from configfile import current
from configfile.applying import apply, changes_for
from configfile.document import ConfigError, dump, parse, survey


class Command(BaseCommand):
    help = (
        "The cluster's configuration as a YAML file: nodes, model profiles, deployments and "
        "API key metadata (never secrets). export writes it; apply makes the database match "
        "a file, all or nothing, after checking all of it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="export|apply")
        export = sub.add_parser("export", help="write the configuration as YAML")
        export.add_argument("--output", "-o", help="a file to write (default: standard output)")
        applying = sub.add_parser("apply", help="make the configuration match a file")
        applying.add_argument("file", help="the YAML file, or - for standard input")
        applying.add_argument("--dry-run", action="store_true", help="show the changes only")
        applying.add_argument(
            "--prune",
            action="store_true",
            help="also delete nodes, profiles and deployments the file does not name, and "
            "revoke the keys it does not name",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "export":
            text = dump(current.document())
            if options["output"]:
                Path(options["output"]).write_text(text, "utf-8")
                self.stderr.write(f"wrote {options['output']}\n")
            else:
                self.stdout.write(text, ending="")
            return
        self._apply(options)

    def _apply(self, options: dict[str, Any]) -> None:
        source = options["file"]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text("utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read {source}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise CommandError(f"{source} is not UTF-8 text (byte {exc.start})") from None
        try:
            desired, problems = survey(parse(text))
            changes = changes_for(desired, prune=options["prune"], problems=problems)
        except ConfigError as exc:
            count = len(exc.problems)
            lines = "\n".join(f"  {p}" for p in exc.problems)
            raise CommandError(
                f"{source}: {count} problem{'s' * (count != 1)}, nothing applied:\n{lines}"
            ) from None
        for change in changes:
            self.stderr.write(change.line() + "\n")
        if not changes:
            self.stderr.write("no changes: the configuration already matches the file.\n")
            return
        if options["dry_run"]:
            self.stderr.write(f"{len(changes)} change(s); dry run, nothing applied.\n")
            return
        try:
            issued = apply(changes, desired, prune=options["prune"])
        except ConfigError as exc:
            raise CommandError(f"{source}: {exc.problems[0]}; nothing applied") from None
        self.stderr.write(f"applied {len(changes)} change(s).\n")
        for key in issued:
            # Secrets on standard output only, one a line: the one time they are shown.
            self.stdout.write(f"{key.name}: {key.secret}")
