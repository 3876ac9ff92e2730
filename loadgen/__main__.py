"""``python -m loadgen``: the same as ``clawdbot loadtest``, without Django."""

from __future__ import annotations

import sys

from loadgen.cli import main

if __name__ == "__main__":
    sys.exit(main())
