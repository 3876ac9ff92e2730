"""The `clawdbot` console script: exactly `manage.py`, with dashed command names accepted."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv if argv is None else argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clawdbot_site.settings")
    # Django command modules cannot contain dashes; the documented names (`simulate-node`)
    # do, so both spellings are accepted.
    if len(args) > 1 and not args[1].startswith("-"):
        args[1] = args[1].replace("-", "_")
    from django.core.management import execute_from_command_line

    from clawdbot_site.env import ConfigError

    try:
        execute_from_command_line(args)
    except ConfigError as exc:
        # A bad environment variable is an operator's typo, not a crash: one line, no trace.
        sys.stderr.write(f"clawdbot: configuration error: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
